"""The ResNet encoders: torchvision's features on given weights, preprocessing, freezing."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.hub
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import Tensor, nn
from torchvision.models import get_model

from mmplug import ComponentError, DataError, EncoderOutput
from mmplug_image import RESNETS, ResNetParams
from mmplug_image.resnet import IMAGENET_MEAN, ResNetEncoder, resnet18

StateDictFactory = Callable[..., dict[str, Tensor]]
NoiseImage = Callable[..., Image.Image]


@pytest.fixture
def images(noise_image: NoiseImage) -> list[Image.Image]:
    """Three RGB images of different sizes and aspect ratios."""
    return [noise_image((80, 60), 1), noise_image((50, 90), 2), noise_image((64, 64), 3)]


def save_weights(state: dict[str, Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def batch_norms(module: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)}


def train_step(encoder: ResNetEncoder, images: list[Image.Image]) -> None:
    """One SGD step of the encoder under a linear classifier, on whatever is trainable."""
    torch.manual_seed(0)
    head = nn.Linear(encoder.output_dim, 2)
    encoder.train()
    trainable = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    logits = head(encoder(encoder.preprocess(images, train=True)).pooled)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0]))
    loss.backward()
    optimizer.step()


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


# -- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pooled_equals_torchvision_without_its_classifier(
    tmp_path: Path,
    random_state_dict: StateDictFactory,
    images: list[Image.Image],
    suffix: str,
):
    state = random_state_dict("resnet18")
    path = save_weights(state, tmp_path / f"resnet18{suffix}")
    encoder = resnet18(weights=str(path), image_size=64).eval()
    reference = get_model("resnet18", weights=None)
    reference.load_state_dict(state)
    reference.fc = nn.Identity()
    reference.eval()

    batch = encoder.preprocess(images)
    with torch.no_grad():
        out = encoder(batch)
        expected = reference(batch["pixels"])
    assert out.pooled.shape == (3, 512)
    torch.testing.assert_close(out.pooled, expected)
    # The classifier is gone, not just unused.
    assert not any(key.startswith("backbone.fc.") for key in encoder.state_dict())


def test_random_weights_by_default(images: list[Image.Image]):
    torch.manual_seed(0)
    first = resnet18(image_size=64).backbone.conv1.weight
    second = resnet18(image_size=64).backbone.conv1.weight
    assert not torch.equal(first, second)


def test_fine_tuned_classifier_and_dataparallel_prefix_are_accepted(
    tmp_path: Path, random_state_dict: StateDictFactory
):
    state = random_state_dict("resnet18")
    state["fc.weight"] = torch.zeros(10, 512)  # fine-tuned for 10 classes: fc is dropped anyway
    state["fc.bias"] = torch.zeros(10)
    wrapped = {f"module.{key}": value for key, value in state.items()}
    encoder = resnet18(weights=str(save_weights(wrapped, tmp_path / "ddp.pt")))
    torch.testing.assert_close(encoder.backbone.conv1.weight, state["conv1.weight"])


def test_state_dict_without_batchnorm_counters_loads(
    tmp_path: Path, random_state_dict: StateDictFactory
):
    # Saved before PyTorch 0.4.1, as torchvision's own IMAGENET1K_V1 files were.
    state = random_state_dict("resnet18")
    legacy = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    encoder = resnet18(weights=str(save_weights(legacy, tmp_path / "legacy.pth")))
    torch.testing.assert_close(encoder.backbone.bn1.running_var, state["bn1.running_var"])


def test_missing_weight_file_names_the_path(tmp_path: Path):
    path = tmp_path / "absent" / "resnet18.pth"
    with pytest.raises(ComponentError, match="weights file not found") as caught:
        resnet18(weights=str(path))
    assert str(path) in str(caught.value)


def test_unreadable_weight_file_names_the_path(tmp_path: Path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ComponentError, match="can't read weights file") as caught:
        resnet18(weights=str(path))
    assert str(path) in str(caught.value)
    listed = save_weights([1, 2, 3], tmp_path / "list.pt")  # type: ignore[arg-type]
    with pytest.raises(ComponentError, match="holds a list, not a state dict"):
        resnet18(weights=str(listed))


def test_checkpoint_that_is_not_a_state_dict_says_so(tmp_path: Path):
    checkpoint: Any = {"epoch": 3, "state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ComponentError, match="epoch, state_dict are not tensors"):
        resnet18(weights=str(path))


def test_mismatched_state_dict_lists_the_keys(tmp_path: Path, random_state_dict: StateDictFactory):
    state = random_state_dict("resnet18")
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grayscale stem
    path = save_weights(state, tmp_path / "edited.pth")
    with pytest.raises(ComponentError) as caught:
        resnet18(weights=str(path))
    message = str(caught.value)
    assert f"weights file {str(path)!r} doesn't fit resnet18" in message
    assert "missing (1): layer4.1.bn2.weight" in message
    assert "unexpected (1): extra.weight" in message
    assert "shape mismatch (1): conv1.weight [64, 1, 7, 7] in the file, [64, 3, 7, 7]" in message


def test_state_dict_of_another_resnet_is_named_and_the_list_capped(
    tmp_path: Path, random_state_dict: StateDictFactory
):
    path = save_weights(random_state_dict("resnet34"), tmp_path / "other.safetensors")
    with pytest.raises(ComponentError) as caught:
        resnet18(weights=str(path))
    message = str(caught.value)
    assert "(it looks like a resnet34 state dict)" in message
    # 8 extra blocks of 12 keys each: a capped list with a count
    assert "unexpected (96): " in message and ", ... and 88 more" in message


def test_unknown_weights_name_suggests_close_ones():
    with pytest.raises(ComponentError) as caught:
        resnet18(weights="IMAGENET1K_V3")
    message = str(caught.value)
    assert "unknown resnet18 weights 'IMAGENET1K_V3'; did you mean 'IMAGENET1K_V1'?" in message
    assert "weights: /path/to/resnet18.pth" in message


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache; the checkpoints folder is where named weights are cached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "imagenet1k_v1", "ResNet18_Weights.DEFAULT"])
def test_weights_name_is_read_from_the_hub_cache_offline(
    torch_home: Path, random_state_dict: StateDictFactory, name: str
):
    state = random_state_dict("resnet18")
    torch.save(state, torch_home / "resnet18-f37072fd.pth")  # torchvision's file name
    encoder = resnet18(weights=name)
    torch.testing.assert_close(
        encoder.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"]
    )
    assert encoder.mean == IMAGENET_MEAN


def test_failed_download_says_where_to_put_the_file(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
):
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ComponentError) as caught:
        ResNetEncoder("resnet50", weights="IMAGENET1K_V2")
    message = str(caught.value)
    assert "can't load resnet50 weights IMAGENET1K_V2" in message
    assert str(torch_home / "resnet50-11ad3fa6.pth") in message
    assert "weights: /path/to/resnet50.pth" in message


def test_corrupt_cached_file_is_named(torch_home: Path):
    cached = torch_home / "resnet18-f37072fd.pth"
    cached.write_bytes(b"half a download")
    with pytest.raises(ComponentError, match=r"the cached file .* can't be read") as caught:
        resnet18(weights="DEFAULT")
    assert str(cached) in str(caught.value)


# -- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "tokens"), [(224, 49), (128, 16)])
def test_tokens_are_the_last_stage_positions(noise_image: NoiseImage, size: int, tokens: int):
    encoder = resnet18(image_size=size).eval()
    batch = encoder.preprocess([noise_image((300, 200)), noise_image((120, 160))])
    assert batch["pixels"].shape == (2, 3, size, size)
    with torch.no_grad():
        out = encoder(batch)
    assert out.tokens is not None and out.mask is not None
    assert out.tokens.shape == (2, tokens, 512)
    assert out.mask.dtype == torch.bool and out.mask.shape == (2, tokens) and bool(out.mask.all())
    # pooled is the mean of the tokens: the same last stage, seen two ways
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))


def test_batch_composition_does_not_change_a_sample(images: list[Image.Image]):
    encoder = resnet18(image_size=64).eval()
    with torch.no_grad():
        together = encoder(encoder.preprocess(images)).pooled
        alone = torch.cat([encoder(encoder.preprocess([image])).pooled for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_follows_the_model_dtype(images: list[Image.Image]):
    encoder = resnet18(image_size=32).eval().double()
    out = encoder(encoder.preprocess(images))
    assert out.pooled.dtype == torch.float64


# -- preprocessing ------------------------------------------------------------------------------


def test_preprocess_resizes_crops_and_normalizes():
    encoder = resnet18(image_size=32)
    mean_colour = tuple(round(255 * m) for m in IMAGENET_MEAN)
    flat = Image.new("RGB", (90, 40), mean_colour)  # type: ignore[arg-type]
    gray = Image.new("L", (10, 12), 255)  # smaller than the crop, and not RGB
    pixels = encoder.preprocess([flat, gray])["pixels"]
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.float32
    assert float(pixels[0].abs().max()) < 0.02  # the ImageNet mean maps to zero
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor((0.229, 0.224, 0.225))
    torch.testing.assert_close(pixels[1, :, 16, 16], white)


def test_augmentation_only_in_training_with_augment(noise_image: NoiseImage):
    images = [noise_image((96, 72), seed) for seed in range(4)]
    plain = resnet18(image_size=32)
    augmenting = resnet18(image_size=32, augment=True)
    evaluated = plain.preprocess(images)["pixels"]
    torch.testing.assert_close(plain.preprocess(images, train=True)["pixels"], evaluated)
    torch.testing.assert_close(augmenting.preprocess(images)["pixels"], evaluated)
    torch.manual_seed(0)
    first = augmenting.preprocess(images, train=True)["pixels"]
    second = augmenting.preprocess(images, train=True)["pixels"]
    assert first.shape == evaluated.shape
    assert not torch.equal(first, second)


def test_preprocess_refuses_what_is_not_an_image():
    with pytest.raises(DataError, match="image 1: expected a PIL image"):
        resnet18(image_size=32).preprocess([Image.new("RGB", (4, 4)), "cat.jpg"])


# -- freezing ---------------------------------------------------------------------------------


def test_freeze_keeps_everything_fixed_through_a_training_step(images: list[Image.Image]):
    encoder = resnet18(image_size=64, freeze=True)
    before = snapshot(encoder)
    train_step(encoder, images)
    assert not any(p.requires_grad for p in encoder.parameters())
    # frozen whole: every submodule in eval mode while training, so its outputs can be cached
    assert not any(module.training for module in encoder.modules())
    after = encoder.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # weights and BatchNorm statistics


def test_trainable_stages_trains_only_the_last_stages(images: list[Image.Image]):
    encoder = resnet18(image_size=64, trainable_stages=1)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("backbone.layer4.") for name in trainable)
    before = snapshot(encoder)
    train_step(encoder, images)
    after = encoder.state_dict()
    for key, value in before.items():
        changed = not torch.equal(after[key], value)
        if key.startswith("backbone.layer4."):
            if key.endswith(("running_mean", "weight")):
                assert changed, key
        else:
            assert not changed, key  # stem and stages 1-3, BatchNorm statistics included
    norms = batch_norms(encoder)
    assert norms["backbone.layer4.0.bn1"].training and not norms["backbone.layer3.1.bn2"].training


def test_frozen_parts_stay_in_eval_across_mode_switches():
    encoder = resnet18(image_size=32, trainable_stages=4)
    encoder.eval().train()
    norms = batch_norms(encoder)
    assert not norms["backbone.bn1"].training  # the stem is frozen even with all 4 stages
    assert norms["backbone.layer1.0.bn1"].training
    assert not encoder.backbone.conv1.weight.requires_grad
    assert encoder.backbone.layer1[0].conv1.weight.requires_grad


def test_trainable_stages_zero_freezes_all_stages():
    encoder = resnet18(image_size=32, trainable_stages=0)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_freeze_and_trainable_stages_are_exclusive():
    with pytest.raises(ValidationError, match=r"either freeze: true .* or trainable_stages: N"):
        ResNetParams(freeze=True, trainable_stages=2)
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        ResNetParams(trainable_stages=5)
    with pytest.raises(ValueError, match="not both"):
        resnet18(freeze=True, trainable_stages=1)


# -- every architecture -------------------------------------------------------------------------


def zero_encoder(arch: str, **params: Any) -> ResNetEncoder:
    """An encoder with zero weights (BatchNorm variance 1), built without random init.

    Random init of ResNet-152 takes seconds on a small CPU; shapes don't depend on values.
    """
    with torch.device("meta"):
        encoder = ResNetEncoder(arch, **params)
    encoder.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*encoder.parameters(), *encoder.buffers()]:
            tensor.zero_()
        for norm in batch_norms(encoder).values():
            assert norm.running_var is not None
            norm.running_var.fill_(1.0)
    return encoder


@pytest.mark.parametrize("arch", sorted(RESNETS))
def test_every_architecture_is_a_conforming_encoder(arch: str, noise_image: NoiseImage):
    encoder = zero_encoder(arch, image_size=32).eval()
    assert encoder.modality == "image"
    assert encoder.output_dim == RESNETS[arch]
    with torch.no_grad():
        out = encoder(encoder.preprocess([noise_image((40, 30)), noise_image((30, 40))]))
    assert isinstance(out, EncoderOutput)
    assert out.pooled.shape == (2, RESNETS[arch])
    assert out.tokens is not None and out.tokens.shape == (2, 1, RESNETS[arch])
