"""mmplug-audio: the ``audio`` modality and the ``mel-cnn``, ``wav2vec2`` and ``hubert`` encoders.

This is the plugin's entry-point module, imported by every ``mmplug list``: it holds the
hookimpls and the params models only and imports pydantic and mmplug's cheap modules, never
torch, torchaudio, soundfile or numpy. The components are named by ``"module:Class"`` strings
and imported when a model is built.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, PositiveInt, field_validator, model_validator

from mmplug import Params, RegisterFn, hookimpl

if TYPE_CHECKING:
    from mmplug_audio.modality import Waveform

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for

__all__ = [
    "HUBERT_BUNDLES",
    "WAV2VEC2_BUNDLES",
    "AudioModalityParams",
    "HuBERTParams",
    "MelCNNParams",
    "Wav2Vec2Params",
    "Waveform",
    "__version__",
]

#: ``torchaudio.pipelines`` bundles each encoder accepts as ``weights``, with the ``size`` whose
#: architecture they have (None: an architecture no ``size`` builds). Listed here rather than
#: read from torchaudio so that validating a config does not import torch.
WAV2VEC2_BUNDLES: dict[str, str | None] = {
    "WAV2VEC2_BASE": "base",
    "WAV2VEC2_LARGE": "large",
    "WAV2VEC2_LARGE_LV60K": "large-lv60k",
    "WAV2VEC2_XLSR53": "large-lv60k",
    "WAV2VEC2_XLSR_300M": "large-lv60k",
    "WAV2VEC2_XLSR_1B": None,
    "WAV2VEC2_XLSR_2B": None,
    "WAV2VEC2_ASR_BASE_10M": "base",
    "WAV2VEC2_ASR_BASE_100H": "base",
    "WAV2VEC2_ASR_BASE_960H": "base",
    "WAV2VEC2_ASR_LARGE_10M": "large",
    "WAV2VEC2_ASR_LARGE_100H": "large",
    "WAV2VEC2_ASR_LARGE_960H": "large",
    "WAV2VEC2_ASR_LARGE_LV60K_10M": "large-lv60k",
    "WAV2VEC2_ASR_LARGE_LV60K_100H": "large-lv60k",
    "WAV2VEC2_ASR_LARGE_LV60K_960H": "large-lv60k",
    "VOXPOPULI_ASR_BASE_10K_DE": "base",
    "VOXPOPULI_ASR_BASE_10K_EN": "base",
    "VOXPOPULI_ASR_BASE_10K_ES": "base",
    "VOXPOPULI_ASR_BASE_10K_FR": "base",
    "VOXPOPULI_ASR_BASE_10K_IT": "base",
}
HUBERT_BUNDLES: dict[str, str | None] = {
    "HUBERT_BASE": "base",
    "HUBERT_LARGE": "large",
    "HUBERT_XLARGE": "xlarge",
    "HUBERT_ASR_LARGE": "large",
    "HUBERT_ASR_XLARGE": "xlarge",
}

# Upper case, digits and underscores only: a bundle name. Anything else is a file path.
_BUNDLE_NAME = re.compile(r"^[A-Z0-9_]+$")


def is_bundle_name(weights: str) -> bool:
    """Whether ``weights`` names a ``torchaudio.pipelines`` bundle rather than a file."""
    return bool(_BUNDLE_NAME.match(weights))


#: The longest clip read from a file, in seconds, by default (ten minutes).
DEFAULT_MAX_SECONDS = 600.0


class AudioModalityParams(Params):
    """Parameters of the ``audio`` modality."""

    max_seconds: float = Field(
        default=DEFAULT_MAX_SECONDS,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Files longer than this are refused from their header, before any sample is "
            "decoded: an hour of 48 kHz audio in a manifest of short clips would otherwise "
            "fill memory."
        ),
    )


class MelCNNParams(Params):
    """Log-mel spectrogram and a small 2-D CNN, trained from scratch."""

    sample_rate: PositiveInt = Field(
        default=16000, description="Every clip is resampled to this rate (Hz)."
    )
    max_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longer clips are cropped to this many seconds (random crop in training).",
    )
    n_mels: PositiveInt = Field(default=64, description="Mel bands.")
    n_fft: int = Field(default=400, ge=16, description="FFT size (and window length), in samples.")
    hop_length: PositiveInt = Field(default=160, description="Samples between frames.")
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64, 128],
        min_length=1,
        description="Output channels of each conv block; each block halves time and frequency.",
    )
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout after each block.")
    output_dim: PositiveInt = Field(default=256, description="Size of pooled and of each token.")
    freeze: bool = Field(default=False, description="Train nothing (the encoder stays in eval).")

    @model_validator(mode="after")
    def _check_spectrogram(self) -> MelCNNParams:
        bins = self.n_fft // 2 + 1
        if self.n_mels > bins:
            raise ValueError(
                f"n_mels={self.n_mels} is more than the {bins} frequency bins of n_fft="
                f"{self.n_fft}; some mel bands would be empty"
            )
        return self


class _SSLParams(Params):
    #: The encoder these params belong to and the bundles it accepts.
    ENCODER: ClassVar[str]
    BUNDLES: ClassVar[dict[str, str | None]]

    # Narrowed to each family's sizes by the subclasses; declared here to come first.
    size: str | None = None
    weights: str | None = Field(
        default=None,
        description=(
            "A torchaudio.pipelines bundle name (e.g. WAV2VEC2_BASE; downloaded once, then "
            "cached), a local .pt/.pth/.safetensors state dict, or null for random weights."
        ),
    )
    layer: PositiveInt | None = Field(
        default=None,
        description=(
            "Use the output of this transformer layer (1 = first; later layers are removed); "
            "null: the model's output."
        ),
    )
    normalize: bool | None = Field(
        default=None,
        description=(
            "Normalize each clip to zero mean, unit variance; null: as the bundle was trained "
            "(false for local files and random weights)."
        ),
    )
    freeze: bool = Field(
        default=False, description="Train nothing; the model stays in eval mode (no dropout)."
    )
    freeze_feature_extractor: bool = Field(
        default=False,
        description="Freeze the convolutional front end only (common when fine-tuning).",
    )
    max_seconds: float = Field(
        default=10.0, gt=0, description="Longer clips are cropped (random crop in training)."
    )
    layer_drop: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description=(
            "Probability of skipping each transformer layer in training (LayerDrop); null: "
            "the model's. Use 0 with DistributedDataParallel."
        ),
    )

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: str | None) -> str | None:
        if value is None or not is_bundle_name(value) or value in cls.BUNDLES:
            return value
        for encoder, bundles in (("wav2vec2", WAV2VEC2_BUNDLES), ("hubert", HUBERT_BUNDLES)):
            if value in bundles:
                raise ValueError(f"{value} is a {encoder} bundle; use encoder {encoder!r} for it")
        close = difflib.get_close_matches(value, cls.BUNDLES, n=3)
        hint = (
            "did you mean " + " or ".join(close) + "?"
            if close
            else f"known bundles: {', '.join(cls.BUNDLES)}"
        )
        raise ValueError(
            f"unknown {cls.ENCODER} bundle {value!r}; {hint} (a file path needs a '/', a '.' "
            "or a lowercase letter)"
        )

    @model_validator(mode="after")
    def _check_size(self) -> Self:
        size = self.size
        if size is None or self.weights is None or not is_bundle_name(self.weights):
            return self
        expected = self.BUNDLES[self.weights]
        if expected != size:
            fix = f"set size: {expected}" if expected else "no size builds it"
            raise ValueError(
                f"size {size!r} does not match bundle {self.weights} ({fix}, or leave size out)"
            )
        return self


class Wav2Vec2Params(_SSLParams):
    """wav2vec 2.0 from ``torchaudio.models``."""

    ENCODER = "wav2vec2"
    BUNDLES = WAV2VEC2_BUNDLES

    size: Literal["base", "large", "large-lv60k"] | None = Field(
        default=None,
        description=(
            "Architecture: torchaudio's wav2vec2_base, wav2vec2_large or wav2vec2_large_lv60k; "
            "null: the bundle's, or base."
        ),
    )


class HuBERTParams(_SSLParams):
    """HuBERT from ``torchaudio.models``."""

    ENCODER = "hubert"
    BUNDLES = HUBERT_BUNDLES

    size: Literal["base", "large", "xlarge"] | None = Field(
        default=None,
        description=(
            "Architecture: torchaudio's hubert_base, hubert_large or hubert_xlarge; "
            "null: the bundle's, or base."
        ),
    )


@hookimpl
def register_modalities(register: RegisterFn) -> None:
    """Register the ``audio`` modality."""
    register(
        "audio",
        "mmplug_audio.modality:AudioModality",
        summary="Audio clips: WAV/FLAC/OGG paths or (array, sample_rate) pairs",
        params=AudioModalityParams,
    )


@hookimpl
def register_encoders(register: RegisterFn) -> None:
    """Register ``mel-cnn``, ``wav2vec2`` and ``hubert``."""
    register(
        "mel-cnn",
        "mmplug_audio.melcnn:MelCNNEncoder",
        params=MelCNNParams,
        modality="audio",
        summary="Log-mel spectrogram and a small 2-D CNN (train from scratch)",
    )
    register(
        "wav2vec2",
        "mmplug_audio.ssl:Wav2Vec2Encoder",
        params=Wav2Vec2Params,
        modality="audio",
        summary="wav2vec 2.0 (torchaudio); weights from a bundle or a local file",
    )
    register(
        "hubert",
        "mmplug_audio.ssl:HuBERTEncoder",
        params=HuBERTParams,
        modality="audio",
        summary="HuBERT (torchaudio); weights from a bundle or a local file",
    )


def __getattr__(name: str) -> Any:
    # Waveform lives with the loader, which imports torch; import it on first use only.
    if name == "Waveform":
        from mmplug_audio.modality import Waveform

        return Waveform
    raise AttributeError(f"module 'mmplug_audio' has no attribute {name!r}")
