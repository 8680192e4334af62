"""``wav2vec2`` and ``hubert``: self-supervised speech models from ``torchaudio.models``.

Both are a ``torchaudio.models.Wav2Vec2Model`` (a convolutional front end, the *feature
extractor*, then a transformer *encoder*); they differ in their pre-training and hence in the
weights and sizes on offer. Weights come from a ``torchaudio.pipelines`` bundle (downloaded
once into torch's hub cache), a local state dict file, or nowhere (random initialization).

Padding and batching: the transformer masks padded frames, and the front end has no padding
of its own, so a frame's features depend only on the clip's samples, except in the
``group_norm`` front end of the base models (and ``wav2vec2`` large), whose first layer
normalizes each channel over the whole time axis, padding included. For those the first
layer's norm is computed over each clip's own frames whenever a batch mixes lengths, so that a
clip gives the same features alone or padded in a batch (up to float rounding).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchaudio  # type: ignore[import-untyped]
from torch import Tensor, nn

from mmplug import (
    ComponentError,
    Encoder,
    EncoderOutput,
    load_checked,
    read_state_dict,
    strip_prefix,
)
from mmplug_audio import is_bundle_name
from mmplug_audio._wave import (
    as_waveform,
    length_mask,
    masked_mean,
    pad_clips,
    prepare_clip,
    seconds_to_samples,
)

#: The rate every bundle was trained at; clips are resampled to it.
SAMPLE_RATE = 16000

#: ``torchaudio.models`` builders by family and ``size``.
BUILDERS: dict[str, dict[str, str]] = {
    "wav2vec2": {
        "base": "wav2vec2_base",
        "large": "wav2vec2_large",
        "large-lv60k": "wav2vec2_large_lv60k",
    },
    "hubert": {"base": "hubert_base", "large": "hubert_large", "xlarge": "hubert_xlarge"},
}

# torchaudio normalizes waveforms with layer_norm's default epsilon.
_NORM_EPS = 1e-5


class WaveformPreprocessor:
    """Clips -> a padded batch of 16 kHz mono waveforms.

    Args:
        max_samples: crop length at 16 kHz.
        min_samples: the front end's receptive field; shorter clips are padded to it.
    """

    def __init__(self, max_samples: int, min_samples: int) -> None:
        self.max_samples = max_samples
        self.min_samples = min_samples

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Prepare clips.

        Args:
            raws: ``n`` :class:`~mmplug_audio.modality.Waveform` (or ``(array, rate)`` pairs).
            train: crop long clips at random instead of at the centre.

        Returns:
            ``waveform`` ``[n, T]`` (zero beyond each clip) and ``lengths`` ``[n]`` (long).
            Clips shorter than the front end's receptive field (400 samples, 25 ms) are
            padded with zeros to it.
        """
        clips = [
            prepare_clip(
                as_waveform(raw, index),
                sample_rate=SAMPLE_RATE,
                max_samples=self.max_samples,
                min_samples=self.min_samples,
                train=train,
            )
            for index, raw in enumerate(raws)
        ]
        waveform, lengths = pad_clips(clips)
        return {"waveform": waveform, "lengths": lengths}


class SSLEncoder(Encoder):
    """A ``torchaudio.models.Wav2Vec2Model`` as an mmplug encoder.

    ``preprocess`` mixes each clip to mono, crops it to ``max_seconds`` (at random in
    training, the centre otherwise) and resamples it to 16 kHz. ``forward`` normalizes each
    clip if asked, runs the model with the clips' lengths, and returns the frame features of
    the last layer (or of ``layer``) as ``tokens`` with their mask, and their masked mean as
    ``pooled``.

    Args:
        size: the architecture (see :data:`BUILDERS`); None: the bundle's, or ``base``.
        weights: a bundle name (``WAV2VEC2_BASE``), a ``.pt``/``.pth``/``.safetensors``
            state dict, or None for random weights.
        layer: use this transformer layer's output (1-based; the later layers are removed);
            None: the model's output (the last layer, with torchaudio's final layer norm).
        normalize: zero-mean, unit-variance normalization of each clip over its own samples;
            None: as the bundle expects (False for files and random weights).
        freeze: no trainable parameters, and the model stays in eval mode.
        freeze_feature_extractor: freeze the convolutional front end only.
        max_seconds: crop length.
        layer_drop: probability of skipping each transformer layer in training (LayerDrop);
            None keeps the model's (torchaudio's builder default, or the bundle's). Skipped
            layers get no gradient: use 0 with DistributedDataParallel, or let it find unused
            parameters. No effect with ``layer``.
        model: a ready ``Wav2Vec2Model`` to wrap instead of ``size``/``weights`` (Python
            only, e.g. a custom ``torchaudio.models.wav2vec2_model(...)``).

    Raises:
        ComponentError: weights that can't be found, downloaded, read or loaded; a ``layer``
            the model does not have.
    """

    modality = "audio"
    family: ClassVar[str]

    def __init__(
        self,
        size: str | None = None,
        weights: str | None = None,
        layer: int | None = None,
        normalize: bool | None = None,
        freeze: bool = False,
        freeze_feature_extractor: bool = False,
        max_seconds: float = 10.0,
        layer_drop: float | None = None,
        *,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        expects_normalized = False
        if model is not None:
            if size is not None or weights is not None:
                raise ComponentError("give either model or size/weights, not both")
        elif weights is not None and is_bundle_name(weights):
            model, expects_normalized = load_bundle(weights)
        else:
            path = None if weights is None else Path(weights).expanduser()
            if path is not None and not path.is_file():  # before spending seconds on building
                raise ComponentError(f"weights file not found: {weights!r}")
            model = build_model(self.family, size or "base")
            if path is not None:
                load_weights(model, path, what=f"{self.family} {size or 'base'}")
        self.model = model
        # Fine-tuned checkpoints carry a CTC head; the encoder returns features, not letters.
        self._parts.aux = None
        self.normalize = expects_normalized if normalize is None else normalize
        transformer = self._parts.encoder.transformer
        num_layers = len(transformer.layers)
        if layer is not None and not 1 <= layer <= num_layers:
            raise ComponentError(f"layer {layer} out of range: the model has {num_layers} layers")
        if layer is not None:
            # The layers after `layer` would never run: dropping them saves memory and time,
            # and leaves no parameter without a gradient (DistributedDataParallel needs that).
            transformer.layers = transformer.layers[:layer]
            if not transformer.layer_norm_first:
                # torchaudio applies this norm after the last layer only, in forward.
                transformer.layer_norm.requires_grad_(False)
        if layer_drop is not None:
            transformer.layer_drop = layer_drop
        self.layer = layer
        self.output_dim = int(self._parts.encoder.feature_projection.projection.out_features)
        conv_layers = list(self._parts.feature_extractor.conv_layers)
        self._preprocessor = WaveformPreprocessor(
            seconds_to_samples(max_seconds, SAMPLE_RATE), _receptive_field(conv_layers)
        )
        self.clipwise_front_end = isinstance(conv_layers[0].layer_norm, nn.GroupNorm)
        self.freeze = freeze
        self.freeze_feature_extractor = freeze or freeze_feature_extractor
        if freeze:
            self.freeze_modules()
        elif freeze_feature_extractor:
            self._parts.feature_extractor.requires_grad_(False)

    @property
    def _parts(self) -> Any:
        # torchaudio is untyped; this is the Wav2Vec2Model with .feature_extractor/.encoder.
        return self.model

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Clips -> a padded batch of 16 kHz mono waveforms (see :class:`WaveformPreprocessor`)."""
        return self._preprocessor(raws, train=train)

    def preprocessor(self) -> WaveformPreprocessor:
        """The crop settings, without the model's weights."""
        return self._preprocessor

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        """Encode.

        Args:
            inputs: ``waveform`` ``[n, T]`` and ``lengths`` ``[n]`` from :meth:`preprocess`.

        Returns:
            ``tokens`` ``[n, T', D]`` (about 50 frames a second), zero beyond each clip's
            frames, their ``mask`` ``[n, T']`` and ``pooled`` ``[n, D]``, their masked mean.
        """
        lengths = inputs["lengths"]
        waveform = inputs["waveform"].to(self._parts.encoder.feature_projection.projection.weight)
        if self.normalize:
            waveform = _normalize(waveform, lengths)
        # Frozen parts run without a graph: no activations kept for a backward pass.
        frozen = torch.no_grad() if self.freeze else contextlib.nullcontext()
        front_frozen = (
            torch.no_grad() if self.freeze_feature_extractor else contextlib.nullcontext()
        )
        with frozen:
            with front_frozen:
                features, frames = self._front_end(waveform, lengths)
            encoder = self._parts.encoder
            if self.layer is None:
                hidden = encoder(features, frames)
            else:
                hidden = encoder.extract_features(features, frames)[-1]
        mask = length_mask(frames, hidden.shape[1])
        tokens = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)
        return EncoderOutput(pooled=masked_mean(tokens, mask), tokens=tokens, mask=mask)

    def _front_end(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Convolutional features ``[n, T', C]`` and frames per clip ``[n]``."""
        extractor = self._parts.feature_extractor
        if not self.clipwise_front_end or bool((lengths == waveform.shape[1]).all()):
            features, frames = extractor(waveform, lengths)
            return features, frames
        # GroupNorm over time would see the padding: normalize the first layer over each
        # clip's own frames, for the whole batch at once. The later convs have no padding and
        # no norm, so a valid frame only ever reads valid frames.
        first, *rest = extractor.conv_layers
        x = first.conv(waveform.unsqueeze(1))  # [n, C, T']
        frames = torch.div(lengths - first.kernel_size, first.stride, rounding_mode="floor") + 1
        frames = frames.clamp(min=0)
        x = nn.functional.gelu(_masked_group_norm(x, frames, first.layer_norm))
        for layer in rest:
            x, frames = layer(x, frames)
        return x.transpose(1, 2), frames


class Wav2Vec2Encoder(SSLEncoder):
    """wav2vec 2.0 (``torchaudio.models.wav2vec2_*``); see :class:`SSLEncoder`."""

    family = "wav2vec2"


class HuBERTEncoder(SSLEncoder):
    """HuBERT (``torchaudio.models.hubert_*``); see :class:`SSLEncoder`."""

    family = "hubert"


def build_model(family: str, size: str) -> nn.Module:
    """A randomly initialized ``Wav2Vec2Model`` of ``family`` and ``size``."""
    try:
        builder = BUILDERS[family][size]
    except KeyError:
        sizes = ", ".join(BUILDERS.get(family, {}))
        raise ComponentError(f"{family} has no size {size!r} (sizes: {sizes})") from None
    model: nn.Module = getattr(torchaudio.models, builder)()
    return model


def load_bundle(name: str) -> tuple[nn.Module, bool]:
    """The model of ``torchaudio.pipelines.<name>`` with its weights (downloaded if needed).

    Returns:
        The bare ``Wav2Vec2Model`` and whether the bundle expects normalized waveforms.

    Raises:
        ComponentError: no such bundle, or its weights can't be fetched (offline).
    """
    import torchaudio.pipelines  # type: ignore[import-untyped]

    bundle = getattr(torchaudio.pipelines, name, None)
    if bundle is None or not hasattr(bundle, "get_model"):
        raise ComponentError(f"torchaudio {torchaudio.__version__} has no pipeline bundle {name!r}")
    try:
        model = bundle.get_model()
    except Exception as exc:
        url = str(getattr(bundle, "_path", ""))
        if url and not url.startswith("https"):
            url = f"https://download.pytorch.org/torchaudio/models/{url}"
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise ComponentError(
            f"can't get the weights of bundle {name} ({type(exc).__name__}: {exc}). They are "
            f"downloaded from {url or 'the network'} into {cache} on first use; without "
            "network, put that file there, or save a state dict where there is network and "
            "give its path as weights"
        ) from exc
    # Bundles that normalize their input wrap the model; the encoder normalizes per clip
    # itself (torchaudio's wrapper normalizes the whole padded batch at once).
    inner: nn.Module = getattr(model, "model", model)
    return inner, bool(getattr(bundle, "_normalize_waveform", False))


def load_weights(model: nn.Module, path: Path, *, what: str) -> None:
    """Load a state dict file into ``model``.

    ``.safetensors`` files are read with ``safetensors``, anything else with
    ``torch.load(weights_only=True)``. Keys of a CTC head (``aux.*``) are ignored, and a
    ``model.`` prefix on every key (a state dict of torchaudio's normalizing wrapper, or of
    this encoder) is removed.

    Args:
        model: the model to load into.
        path: the file.
        what: the architecture, named in errors (``wav2vec2 base``).

    Raises:
        ComponentError: the file is missing or unreadable, or its tensors don't fit
            ``model`` (missing, unexpected and mis-shaped keys are listed).
    """
    state = strip_prefix(read_state_dict(path), "model.")
    state = {key: value for key, value in state.items() if not key.startswith("aux.")}
    load_checked(
        model, state, source=f"weights {str(path)!r}", target=what, hint="(is size right?)"
    )


def _receptive_field(conv_layers: list[Any]) -> int:
    """Samples the front end needs for one frame (400 for every torchaudio config)."""
    field, hop = 1, 1
    for layer in conv_layers:
        field += (layer.conv.kernel_size[0] - 1) * hop
        hop *= layer.conv.stride[0]
    return field


def _masked_group_norm(x: Tensor, frames: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` applied to each clip's first ``frames[i]`` time steps only.

    Args:
        x: ``[n, C, T]``; what lies beyond a clip's frames is ignored (and comes out finite).
        frames: ``[n]`` valid time steps per clip.
        norm: the ``GroupNorm`` whose groups, epsilon and affine to use.
    """
    n, channels, size = x.shape
    groups = norm.num_groups
    mask = length_mask(frames, size)[:, None, None, :]  # [n, 1, 1, T]
    grouped = x.reshape(n, groups, channels // groups, size)
    count = (frames.clamp(min=1) * (channels // groups)).to(x.dtype)[:, None, None, None]
    mean = torch.where(mask, grouped, 0.0).sum(dim=(2, 3), keepdim=True) / count
    var = torch.where(mask, (grouped - mean) ** 2, 0.0).sum(dim=(2, 3), keepdim=True) / count
    out = ((grouped - mean) * torch.rsqrt(var + norm.eps)).reshape(n, channels, size)
    if norm.affine:
        out = out * norm.weight[:, None] + norm.bias[:, None]
    return out


def _normalize(waveform: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance per clip over its own samples; padding stays zero.

    Args:
        waveform: ``[n, T]``.
        lengths: ``[n]``.
    """
    mask = length_mask(lengths, waveform.shape[1]).to(waveform.dtype)
    count = lengths.clamp(min=1).to(waveform.dtype).unsqueeze(-1)
    mean = (waveform * mask).sum(dim=1, keepdim=True) / count
    var = (((waveform - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (waveform - mean) * torch.rsqrt(var + _NORM_EPS) * mask
