"""Waveform preparation shared by the encoders: mono mix, crop, resample, pad, masks.

Everything here runs in ``Encoder.preprocess`` (data-loader workers, CPU), except the mask
helpers, which run in ``forward`` on whatever device the batch is on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torchaudio  # type: ignore[import-untyped]
from torch import Tensor

from mmplug import DataError
from mmplug_audio.modality import Waveform, from_array


def as_waveform(raw: Any, index: int) -> Waveform:
    """A raw value as :class:`Waveform`; also takes ``(array, sample_rate)`` for Python callers."""
    if isinstance(raw, Waveform):
        return raw
    if isinstance(raw, tuple | list) and len(raw) == 2:
        return from_array(raw[0], raw[1], what=f"clip {index}")
    raise DataError(
        f"audio: clip {index} is a {type(raw).__name__}, not a Waveform; load values with the "
        "audio modality first"
    )


def prepare_clip(
    wave: Waveform,
    *,
    sample_rate: int,
    max_samples: int,
    min_samples: int = 1,
    train: bool = False,
) -> Tensor:
    """One clip, mono, at ``sample_rate``, at most ``max_samples`` long.

    Longer clips are cropped before resampling (a random window when ``train``, the centre
    otherwise), so that a long file costs no more than ``max_samples`` to resample. Clips
    shorter than ``min_samples`` are padded with zeros to that length (the smallest input an
    encoder's front end accepts); the padding then counts as part of the clip.

    Args:
        wave: ``samples`` ``[channels, time]`` at ``wave.sample_rate``.
        sample_rate: the rate to resample to.
        max_samples: the crop length at ``sample_rate``.
        min_samples: the shortest clip returned.
        train: crop at random instead of at the centre.

    Returns:
        ``[time]`` float32, ``min_samples <= time <= max_samples``.
    """
    # Channels are averaged: the encoders are mono, and a mean keeps the level of a
    # dual-mono file.
    samples = wave.samples.to(torch.float32).mean(dim=0)
    rate = wave.sample_rate
    crop = math.ceil(max_samples * rate / sample_rate)  # max_samples, at the clip's own rate
    if samples.shape[0] > crop:
        spare = samples.shape[0] - crop
        start = int(torch.randint(0, spare + 1, ())) if train else spare // 2
        samples = samples[start : start + crop]
    if rate != sample_rate:
        samples = _resampler(rate, sample_rate)(samples)
    samples = samples[:max_samples]
    if samples.shape[0] < min_samples:
        samples = torch.nn.functional.pad(samples, (0, min_samples - samples.shape[0]))
    return samples


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int) -> Any:
    """``torchaudio.transforms.Resample``, cached: building its sinc kernel costs more than
    applying it to a clip, and a dataset has few distinct rates."""
    return torchaudio.transforms.Resample(orig_freq, new_freq, dtype=torch.float32)


def pad_clips(clips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D clips with zeros to the longest.

    Returns:
        ``waveform`` ``[n, T]`` and ``lengths`` ``[n]`` (long), the real samples per clip.
    """
    lengths = torch.tensor([clip.shape[0] for clip in clips], dtype=torch.long)
    waveform = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for row, clip in enumerate(clips):
        waveform[row, : clip.shape[0]] = clip
    return waveform, lengths


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """``[n, size]`` bool, True for the first ``lengths[i]`` positions of row ``i``."""
    return torch.arange(size, device=lengths.device) < lengths.unsqueeze(-1)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``tokens`` ``[n, T, D]`` over the positions where ``mask`` ``[n, T]`` is True."""
    keep = mask.unsqueeze(-1)
    # where(), not a product: whatever sits in padded positions never reaches the mean.
    total = torch.where(keep, tokens, 0.0).sum(dim=1)
    return total / keep.sum(dim=1).clamp(min=1).to(tokens.dtype)


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """``seconds`` at ``sample_rate``, at least one sample."""
    return max(1, round(seconds * sample_rate))
