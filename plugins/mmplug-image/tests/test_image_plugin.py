"""mmplug-image as an installed plugin: discovery, registration, cheap import, a built model."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import mmplug
import mmplug_image
from mmplug import ComponentError, ConfigError, EncoderOutput, Fusion
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import discover, load_plugins

ONLY_THIS = {"MMPLUG_LOAD_PLUGINS": "mmplug-image"}  # other plugins' state is not our concern
ENCODERS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


class TokenMeanFusion(Fusion):
    """Projects each key's mean token; enough to check that tokens and mask reach a fusion."""

    def __init__(self, input_dims: dict[str, int], dim: int = 8):
        super().__init__()
        self.output_dim = dim
        self.project = nn.ModuleDict({k: nn.Linear(d, dim) for k, d in sorted(input_dims.items())})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        fused = []
        for key in sorted(self.project):
            out = features[key]
            assert out.tokens is not None and out.mask is not None
            weights = out.mask.unsqueeze(-1).to(out.tokens.dtype)
            mean = (out.tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
            fused.append(self.project[key](mean))
        return torch.stack(fused).sum(0)


class FusionPlugin:
    @mmplug.hookimpl
    def register_fusions(self, register: Any) -> None:
        register("token-mean", TokenMeanFusion)


@pytest.fixture
def image_host() -> PluginHost:
    """Core, the installed mmplug-image (through its entry point) and an inline fusion."""
    host = load_plugins(environ=ONLY_THIS)
    host.add(FusionPlugin(), name="fusion", distribution="test-fusion", version="1")
    return host


def config(**encoder: Any) -> dict[str, Any]:
    return {
        "model": {
            "encoders": {"image": {"name": "resnet18", "image_size": 64, **encoder}},
            "fusion": {"name": "token-mean"},
            "head": {"name": "classification", "num_classes": 3},
        }
    }


def test_entry_point_is_discovered_with_its_distribution_and_version():
    found = [p for p in discover() if p.distribution == "mmplug-image"]
    assert [(p.name, p.module, p.version) for p in found] == [
        ("image", "mmplug_image", mmplug_image.__version__)
    ]


def test_loading_registers_the_modality_and_five_encoders():
    host = load_plugins(environ=ONLY_THIS)
    (record,) = [r for r in host.records if r.distribution == "mmplug-image"]
    assert (record.status, record.error) == ("loaded", None)
    assert record.version == mmplug_image.__version__ == importlib.metadata.version("mmplug-image")
    assert sorted(record.components) == sorted(
        ["modality:image", *(f"encoder:{name}" for name in ENCODERS)]
    )
    for name in ENCODERS:
        spec = host.registry.get("encoder", f"mmplug-image:{name}")
        assert (spec.modality, spec.factory) == ("image", f"mmplug_image.resnet:{name}")
        assert spec.summary.startswith(f"ResNet-{name.removeprefix('resnet')} features")
        assert "name" not in spec.params.model_fields
    modality = host.registry.get("modality", "image")
    assert modality.factory == "mmplug_image.modality:ImageModality"


def test_every_registered_factory_resolves():
    host = load_plugins(environ=ONLY_THIS)
    for spec in host.registry.components():
        if spec.distribution == "mmplug-image":
            assert callable(spec.load_factory()), spec.name


def test_model_from_config_runs_from_image_files(
    image_host: PluginHost,
    image_file: Callable[..., Path],
    noise_image: Callable[..., Image.Image],
):
    image_file("a.png", noise_image((70, 50), 1))
    folder = image_file("b.jpg", noise_image((40, 90), 2)).parent
    model = mmplug.build_model(config(), registry=image_host.registry).eval()
    assert model.describe().splitlines()[0].split()[:4] == [
        "encoder",
        "image",
        "resnet18",
        "(mmplug-image",
    ]
    rows = [{"image": "a.png"}, {}, {"image": "b.jpg"}]
    pipeline = mmplug.Pipeline.from_model(model)
    samples = [pipeline.load(row, root=folder) for row in rows]
    assert all(s["image"].mode == "RGB" for s in samples if "image" in s)
    batch = pipeline.collate(samples)
    assert batch.inputs["image"]["pixels"].shape == (2, 3, 64, 64)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (3, 3)
    image = out.features["image"]
    assert image.pooled.shape == (3, 512)
    assert image.tokens is not None and image.tokens.shape == (3, 4, 512)  # 64 px: 2 x 2
    assert image.mask is not None and image.mask.tolist() == [[True] * 4, [False] * 4, [True] * 4]


def test_config_errors_point_at_the_encoder(image_host: PluginHost):
    with pytest.raises(ConfigError) as caught:
        mmplug.build_model(config(freeze=True, trainable_stages=1), registry=image_host.registry)
    assert "model.encoders.image" in str(caught.value)
    assert "not both" in str(caught.value)
    with pytest.raises(ConfigError, match=r"model\.encoders\.image\.pretrained"):
        mmplug.build_model(config(pretrained=True), registry=image_host.registry)


def test_weights_errors_name_the_config_path_and_the_file(image_host: PluginHost, tmp_path: Path):
    missing = tmp_path / "resnet18.pth"
    with pytest.raises(ComponentError) as caught:
        mmplug.build_model(config(weights=str(missing)), registry=image_host.registry)
    message = str(caught.value)
    assert message.startswith(
        f"model.encoders.image: encoder 'resnet18' from mmplug-image {mmplug_image.__version__}"
    )
    assert f"weights file not found: {str(missing)!r}" in message


def test_bad_image_file_is_a_data_error_naming_it(image_host: PluginHost, tmp_path: Path):
    model = mmplug.build_model(config(), registry=image_host.registry)
    (tmp_path / "notes.png").write_text("not pixels")
    with pytest.raises(mmplug.DataError, match=r"notes\.png"):
        mmplug.Pipeline.from_model(model).load({"image": "notes.png"}, root=tmp_path)
