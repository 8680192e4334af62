"""wav2vec2 and hubert: weights from files and bundles, masks, layers, freezing, batching."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
import torchaudio
from pydantic import ValidationError
from safetensors.torch import save_file
from torchaudio.pipelines._wav2vec2.utils import _extend_model

from mmplug import ComponentError, build_model
from mmplug_audio import HuBERTParams, Wav2Vec2Params, __version__
from mmplug_audio.modality import Waveform
from mmplug_audio.ssl import HuBERTEncoder, Wav2Vec2Encoder, load_weights


def clip(seconds: float, seed: int, rate: int = 16000) -> Waveform:
    generator = torch.Generator().manual_seed(seed)
    return Waveform(0.1 * torch.randn(1, round(seconds * rate), generator=generator), rate)


def test_a_random_state_dict_round_trips_through_a_file(base_model, tmp_path: Path) -> None:
    # The real wav2vec2_base (~95M parameters). A forward pass of it costs seconds on a small
    # CPU, so this test runs one; test_matches_torchaudio checks outputs on a small model.
    path = tmp_path / "base.pt"
    torch.save(base_model.state_dict(), path)

    encoder = Wav2Vec2Encoder(weights=str(path)).eval()

    for key, value in base_model.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[key], value), key
    with torch.no_grad():
        out = encoder(encoder.preprocess([clip(0.5, 0)]))
    assert encoder.output_dim == 768
    assert out.tokens is not None and out.tokens.shape == (1, 24, 768)  # 20 ms frames
    assert out.mask is not None and out.mask.all()


def test_matches_torchaudio(tiny) -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    encoder = HuBERTEncoder(model=model).eval()
    wave = clip(0.5, 0)
    with torch.no_grad():
        out = encoder(encoder.preprocess([wave]))
        expected, frames = model(wave.samples, torch.tensor([8000]))
    assert frames.tolist() == [expected.shape[1]] == [24]
    torch.testing.assert_close(out.tokens, expected)
    torch.testing.assert_close(out.pooled, expected.mean(dim=1))
    assert out.mask is not None and out.mask.all()


def test_safetensors_files_load(tiny, tmp_path: Path) -> None:
    source = tiny()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = tiny()
    load_weights(target, path, what="tiny")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_same_clip_alone_or_in_a_batch_of_other_lengths(tiny, mode) -> None:
    # group_norm (wav2vec2 base and large, hubert base) normalizes the first conv layer over
    # time, so the encoder runs that front end clip by clip; layer_norm needs no such care.
    torch.manual_seed(0)
    encoder = HuBERTEncoder(model=tiny(mode)).eval()
    clips = [clip(0.3, 3), clip(0.9, 4), clip(0.61, 5), clip(0.02, 6)]
    assert encoder.clipwise_front_end == (mode == "group_norm")
    with torch.no_grad():
        together = encoder(encoder.preprocess(clips)).pooled
        alone = torch.cat([encoder(encoder.preprocess([c])).pooled for c in clips])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_layer_selects_an_intermediate_layer_and_drops_the_rest(tiny) -> None:
    torch.manual_seed(0)
    model = tiny("layer_norm").eval()
    wave = clip(0.4, 7)
    with torch.no_grad():
        layers, _ = model.extract_features(wave.samples)

    encoder = Wav2Vec2Encoder(model=model, layer=2).eval()
    with torch.no_grad():
        out = encoder(encoder.preprocess([wave]))

    torch.testing.assert_close(out.tokens, layers[1])
    assert len(model.encoder.transformer.layers) == 2
    with pytest.raises(ComponentError, match="layer 4 out of range: the model has 3 layers"):
        Wav2Vec2Encoder(model=tiny(), layer=4)


@pytest.mark.parametrize(("mode", "layer"), [("group_norm", 2), ("layer_norm", None)])
def test_training_reaches_every_trainable_parameter(tiny, mode, layer) -> None:
    # DistributedDataParallel fails on parameters that get no gradient. group_norm models put
    # the transformer's layer norm after the last layer, which `layer` skips.
    encoder = HuBERTEncoder(model=tiny(mode), layer=layer, layer_drop=0.0).train()
    out = encoder(encoder.preprocess([clip(0.3, 0), clip(0.2, 1)], train=True))
    assert out.tokens is not None and out.mask is not None
    (out.pooled.square().mean() + out.tokens[out.mask].square().mean()).backward()
    missing = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_layer_drop_is_set(tiny) -> None:
    encoder = Wav2Vec2Encoder(model=tiny(), layer_drop=0.3)
    assert encoder.model.encoder.transformer.layer_drop == 0.3
    kept = Wav2Vec2Encoder(model=tiny())
    assert kept.model.encoder.transformer.layer_drop == 0.0  # the model's own


def test_normalize_matches_torchaudio_for_one_clip(tiny) -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    encoder = Wav2Vec2Encoder(model=model, normalize=True).eval()
    wave = Waveform(0.3 + 0.05 * clip(0.4, 8).samples, 16000)  # off-centre, quiet
    with torch.no_grad():
        out = encoder(encoder.preprocess([wave]))
        expected, _ = _extend_model(model, normalize_waveform=True)(wave.samples)
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=1e-4)


def test_freeze_leaves_no_trainable_parameters(tiny) -> None:
    encoder = Wav2Vec2Encoder(model=tiny(), freeze=True)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not any(m.training for m in encoder.modules())  # no dropout or layer drop
    out = encoder(encoder.preprocess([clip(0.2, 0)]))
    assert not out.pooled.requires_grad


def test_freeze_feature_extractor_freezes_the_front_end_only(tiny) -> None:
    encoder = Wav2Vec2Encoder(model=tiny(), freeze_feature_extractor=True).train()
    for name, param in encoder.named_parameters():
        assert param.requires_grad == (not name.startswith("model.feature_extractor.")), name
    out = encoder(encoder.preprocess([clip(0.3, 0), clip(0.2, 1)]))
    out.pooled.sum().backward()
    assert encoder.model.encoder.feature_projection.projection.weight.grad is not None


def test_weights_that_do_not_fit_list_the_keys(tiny, tmp_path: Path) -> None:
    state = tiny().state_dict()
    state.pop("encoder.transformer.layers.0.attention.k_proj.weight")
    state["encoder.extra.weight"] = torch.zeros(1)
    state["encoder.feature_projection.projection.bias"] = torch.zeros(31)
    for layer in range(10):  # a long list is cut short with a count
        state[f"encoder.more.{layer}"] = torch.zeros(1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)

    with pytest.raises(ComponentError) as info:
        load_weights(tiny(), path, what="hubert base")
    message = str(info.value)
    assert "odd.pt" in message and "hubert base" in message
    assert "missing (1): encoder.transformer.layers.0.attention.k_proj.weight" in message
    assert "unexpected (11): encoder.extra.weight; encoder.more.0" in message
    assert "encoder.more.8" not in message and "... and 3 more" in message
    assert (
        "shape mismatch (1): encoder.feature_projection.projection.bias [31] in the file, "
        "[32] in hubert base" in message
    )


def test_prefixed_and_ctc_head_keys_are_accepted(tiny, tmp_path: Path) -> None:
    source = tiny()
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state["model.aux.weight"] = torch.zeros(29, 32)  # a fine-tuned checkpoint's CTC head
    path = tmp_path / "wrapped.pt"
    torch.save(state, path)
    target = tiny()
    load_weights(target, path, what="tiny")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_unreadable_and_missing_weight_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"weights file not found: '.*absent\.pt'"):
        HuBERTEncoder(weights=str(tmp_path / "absent.pt"))
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a tensor file")
    with pytest.raises(ComponentError, match=r"can't read weights file '.*junk\.safetensors'"):
        load_weights(torch.nn.Linear(1, 1), junk, what="x")


def test_bundle_weights_are_fetched_and_unwrapped(tiny, monkeypatch) -> None:
    bundle = torchaudio.pipelines.WAV2VEC2_LARGE_LV60K  # normalizes its input
    model = tiny("layer_norm")
    model.aux = torch.nn.Linear(32, 29)  # as an ASR bundle's model has
    monkeypatch.setattr(bundle, "get_model", lambda **_: _extend_model(model, True))
    encoder = Wav2Vec2Encoder(weights="WAV2VEC2_LARGE_LV60K")
    assert encoder.model is model and model.aux is None
    assert encoder.normalize is True
    assert Wav2Vec2Encoder(weights="WAV2VEC2_LARGE_LV60K", normalize=False).normalize is False


def test_offline_bundle_error_names_it_and_suggests_a_local_file(tiny, monkeypatch) -> None:
    def offline(**_: Any) -> Any:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchaudio.pipelines.HUBERT_BASE, "get_model", offline)
    with pytest.raises(ComponentError) as info:
        HuBERTEncoder(weights="HUBERT_BASE")
    message = str(info.value)
    assert "HUBERT_BASE" in message and "no network" in message
    assert "hubert_fairseq_base_ls960.pth" in message and "path as weights" in message


def test_build_errors_name_the_config_path_and_the_file(model_host, tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    config = {
        "model": {
            "encoders": {"voice": {"name": "wav2vec2", "weights": str(missing)}},
            "fusion": {"name": "pooled"},
            "head": {"name": "linear"},
        }
    }
    with pytest.raises(ComponentError) as info:
        build_model(config, registry=model_host.registry)
    message = str(info.value)
    assert message.startswith(
        f"model.encoders.voice: encoder 'wav2vec2' from mmplug-audio {__version__}"
    )
    assert f"weights file not found: {str(missing)!r}" in message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"weights": "WAV2VEC2_BASEE"}, "did you mean WAV2VEC2_BASE"),
        ({"weights": "HUBERT_LARGE"}, "use encoder 'hubert'"),
        ({"weights": "WAV2VEC2_BASE", "size": "large"}, "set size: base"),
        ({"size": "xlarge"}, "Input should be"),
        ({"layer": 0}, "greater than 0"),
        ({"sample_rate": 8000}, "Extra inputs"),
    ],
)
def test_wav2vec2_params_are_validated(params, message) -> None:
    with pytest.raises(ValidationError, match=message):
        Wav2Vec2Params(**params)


def test_params_accept_bundles_files_and_sizes() -> None:
    assert Wav2Vec2Params(weights="WAV2VEC2_XLSR53").size is None
    assert Wav2Vec2Params(weights="WAV2VEC2_LARGE_LV60K", size="large-lv60k").weights
    assert Wav2Vec2Params(weights="checkpoints/BASE.PT", size="large").size == "large"
    assert HuBERTParams(weights="HUBERT_XLARGE", size="xlarge").size == "xlarge"
    with pytest.raises(ValidationError, match="use encoder 'wav2vec2'"):
        HuBERTParams(weights="WAV2VEC2_BASE")


_ARCHITECTURE = (
    "extractor_mode",
    "extractor_conv_bias",
    "encoder_embed_dim",
    "encoder_pos_conv_kernel",
    "encoder_pos_conv_groups",
    "encoder_num_layers",
    "encoder_num_heads",
    "encoder_ff_interm_features",
    "encoder_layer_norm_first",
)


def _builder_architecture(builder: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The architecture arguments a torchaudio builder passes to wav2vec2_model (not built)."""
    captured: dict[str, Any] = {}

    class Captured(Exception):
        pass

    def capture(**kwargs: Any) -> None:
        captured.update(kwargs)
        raise Captured

    monkeypatch.setattr(torchaudio.models.wav2vec2.model, "wav2vec2_model", capture)
    with pytest.raises(Captured):
        getattr(torchaudio.models.wav2vec2.model, builder)()
    return {key: captured[key] for key in _ARCHITECTURE}


def test_listed_bundles_exist_and_have_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmplug_audio import HUBERT_BUNDLES, WAV2VEC2_BUNDLES
    from mmplug_audio.ssl import BUILDERS

    for family, bundles in (("wav2vec2", WAV2VEC2_BUNDLES), ("hubert", HUBERT_BUNDLES)):
        sizes = {
            size: _builder_architecture(builder, monkeypatch)
            for size, builder in BUILDERS[family].items()
        }
        for name, size in bundles.items():
            bundle = getattr(torchaudio.pipelines, name)
            assert bundle.sample_rate == 16000, name
            architecture = {key: bundle._params[key] for key in _ARCHITECTURE}
            matching = [s for s, arch in sizes.items() if arch == architecture]
            assert matching == ([size] if size else []), name
