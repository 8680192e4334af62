"""Fixtures for mmplug-audio: tones written with soundfile, plugin hosts, small models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from torch import Tensor, nn

import mmplug
import mmplug_audio
from mmplug import EncoderOutput, Fusion, Head
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import load_plugins

TONE_HZ = 440.0

WriteTone = Callable[..., Path]


def tone(sample_rate: int, seconds: float, channels: int = 1, hz: float = TONE_HZ) -> np.ndarray:
    """A sine tone, ``[time, channels]`` float32; channel ``c`` has amplitude ``0.5 / (c + 1)``."""
    frames = round(seconds * sample_rate)
    wave = np.sin(2 * np.pi * hz * np.arange(frames) / sample_rate)
    return np.stack([0.5 / (c + 1) * wave for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def write_tone(tmp_path: Path) -> WriteTone:
    """``write_tone(name, sample_rate, seconds=0.5, channels=1, hz=440)`` -> the file's path.

    The format follows the suffix (``.wav``, ``.flac``, ``.ogg`` for Vorbis).
    """

    def write(
        name: str, sample_rate: int, seconds: float = 0.5, channels: int = 1, hz: float = TONE_HZ
    ) -> Path:
        path = tmp_path / name
        soundfile.write(path, tone(sample_rate, seconds, channels, hz), sample_rate)
        return path

    return write


@pytest.fixture
def audio_host() -> PluginHost:
    """Core's heads plus this plugin, added by hand (no other installed plugin)."""
    host = load_plugins(entry_points=False)
    host.add(
        mmplug_audio,
        name="audio",
        distribution="mmplug-audio",
        version=mmplug_audio.__version__,
    )
    return host


class _Pooled(Fusion):
    """The pooled features of the one key."""

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__()
        (self.key, self.output_dim) = next(iter(input_dims.items()))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        return features[self.key].pooled


class _Linear(Head):
    """A linear regression head; core's heads import torchmetrics, which takes seconds."""

    task = "regression"

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.output_dim = 1
        self.layer = nn.Linear(input_dim, 1)

    def forward(self, fused: Tensor) -> Tensor:
        return self.layer(fused)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.mse_loss(outputs.squeeze(-1), targets)

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs

    def metrics(self) -> dict[str, Any]:
        return {}


class PartsPlugin:
    """Fusion ``pooled`` and head ``linear``, enough to build a model around one encoder."""

    @mmplug.hookimpl
    def register_fusions(self, register):
        register("pooled", _Pooled)

    @mmplug.hookimpl
    def register_heads(self, register):
        register("linear", _Linear)


@pytest.fixture
def model_host(audio_host: PluginHost) -> PluginHost:
    """:func:`audio_host` plus fusion ``pooled`` and head ``linear`` (distribution test-parts)."""
    audio_host.add(PartsPlugin(), name="test", distribution="test-parts", version="1")
    return audio_host


@pytest.fixture(scope="session")
def base_model() -> Any:
    """A randomly initialized ``torchaudio.models.wav2vec2_base`` in eval mode (~95M params)."""
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_base().eval()


def tiny_wav2vec2(extractor_mode: str = "group_norm") -> Any:
    """A small ``Wav2Vec2Model`` (same front-end strides, 400-sample receptive field)."""
    conv = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
    return torchaudio.models.wav2vec2_model(
        extractor_mode=extractor_mode,
        extractor_conv_layer_config=conv,
        extractor_conv_bias=extractor_mode == "layer_norm",
        encoder_embed_dim=32,
        encoder_projection_dropout=0.1,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=3,
        encoder_num_heads=4,
        encoder_attention_dropout=0.1,
        encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.1,
        encoder_dropout=0.1,
        encoder_layer_norm_first=extractor_mode == "layer_norm",
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )


@pytest.fixture
def tiny() -> Callable[..., Any]:
    """``tiny(extractor_mode)``: a fresh small wav2vec2 model."""
    return tiny_wav2vec2


@pytest.fixture(scope="session")
def small_encoder() -> Any:
    """``wav2vec2`` around a small model, in eval mode; its preprocess is the real one."""
    from mmplug_audio.ssl import Wav2Vec2Encoder

    torch.manual_seed(0)
    return Wav2Vec2Encoder(model=tiny_wav2vec2()).eval()
