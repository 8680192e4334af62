"""The ``audio`` modality: a file path or an ``(array, sample_rate)`` pair -> :class:`Waveform`.

Decoding uses ``soundfile`` (libsndfile): WAV, FLAC and OGG (Vorbis, Opus), plus whatever else
the installed libsndfile reads (AIFF, and MP3 from libsndfile 1.1). The waveform keeps its own
sample rate and channels; encoders mix to mono and resample in ``preprocess``, because the
target rate is an encoder parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile  # type: ignore[import-untyped]
import torch
from torch import Tensor

from mmplug import DataError, Modality
from mmplug_audio import DEFAULT_MAX_SECONDS


@dataclass(frozen=True)
class Waveform:
    """A decoded clip at its native rate; picklable, so it can cross data-loader workers.

    Attributes:
        samples: ``[channels, time]`` float32, nominally in ``[-1, 1]``.
        sample_rate: samples per second per channel.
    """

    samples: Tensor
    sample_rate: int

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[-1])

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.num_frames / self.sample_rate


class AudioModality(Modality):
    """Loads audio clips.

    A value is one of:

    - a path (``str`` or ``Path``, relative to ``root``) to a file ``soundfile`` decodes;
    - an ``(array, sample_rate)`` pair: a numpy array or torch tensor, 1-D ``[time]`` or 2-D
      ``[channels, time]``, float (nominally in ``[-1, 1]``) or signed integer PCM (scaled to
      ``[-1, 1)``);
    - a :class:`Waveform`, returned as it is.
    """

    name = "audio"

    def __init__(self, max_seconds: float = DEFAULT_MAX_SECONDS):
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.max_seconds = max_seconds

    def load(self, value: Any, *, root: str | Path | None = None) -> Waveform:
        """Load one clip.

        Raises:
            DataError: a missing, unreadable, non-audio or empty file (named), or a pair
                that is not audio.
        """
        if isinstance(value, Waveform):
            return value
        if isinstance(value, str | Path):
            return read_file(self.resolve_path(value, root), max_seconds=self.max_seconds)
        if isinstance(value, tuple | list) and len(value) == 2:
            return from_array(value[0], value[1], what="audio value")
        raise DataError(
            "audio: expected a path to an audio file or an (array, sample_rate) pair, got "
            f"{type(value).__name__}"
        )


def read_file(path: Path, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> Waveform:
    """Decode a file with ``soundfile``; every failure is a :class:`DataError` naming ``path``:
    a file longer than ``max_seconds`` (known from its header, before decoding) or holding
    fewer frames than its header promises (truncated) too."""
    try:
        info = soundfile.info(str(path))
        if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
            raise DataError(
                f"audio: {str(path)!r} is {info.frames / info.samplerate:,.1f} s long, over "
                f"the limit of {max_seconds:g} s (max_seconds); refused before decoding"
            )
        short = _short_wav_data(path)
        if short is not None:
            raise DataError(
                f"audio: {str(path)!r} is truncated: its header promises {short[0]:,} bytes "
                f"of samples, the file holds {short[1]:,}"
            )
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError) as exc:
        # LibsndfileError (a SoundFileError, and RuntimeError before soundfile 0.13) for
        # empty files and files that are not audio; OSError for unreadable ones.
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"audio: {str(path)!r} is an empty file (0 bytes)") from exc
        # error_string is libsndfile's reason without soundfile's "Error opening <path>".
        reason = getattr(exc, "error_string", None) or str(exc)
        raise DataError(f"audio: can't decode {str(path)!r}: {reason}") from exc
    # soundfile gives [time, channels]; Waveform is [channels, time] like torchaudio.
    return _checked(torch.from_numpy(np.ascontiguousarray(data.T)), rate, what=str(path))


def _short_wav_data(path: Path) -> tuple[int, int] | None:
    """(promised, present) bytes of a WAV file's ``data`` chunk when the file ends before it
    does; None for a whole file or another format. libsndfile reads such a file without a
    word, as if the missing samples had never been promised."""
    with path.open("rb") as handle:
        if handle.read(12)[8:12] != b"WAVE":
            return None
        size = path.stat().st_size
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk == b"data":
                present = size - handle.tell()
                # 0 and 0xFFFFFFFF: a streamed file whose writer never filled in the size
                if length not in (0, 0xFFFFFFFF) and present < length:
                    return length, present
                return None
            handle.seek(length + length % 2, 1)  # chunks are padded to an even size


def from_array(array: Any, sample_rate: Any, *, what: str) -> Waveform:
    """Build a :class:`Waveform` from an in-memory array; ``what`` names it in errors."""
    if isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(array, Tensor):
        tensor = array.detach().cpu()
    else:
        raise DataError(
            f"audio: {what}: expected a numpy array or torch tensor, got {type(array).__name__}"
        )
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2:
        raise DataError(f"audio: {what}: expected [time] or [channels, time], got {_shape(tensor)}")
    if 0 < tensor.shape[1] < tensor.shape[0]:
        raise DataError(
            f"audio: {what}: shape {_shape(tensor)} has more channels than samples; "
            "arrays are [channels, time] (transpose soundfile's [time, channels])"
        )
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    elif tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        # Integer PCM, as scipy.io.wavfile returns it: full scale maps to [-1, 1).
        full_scale = 2.0 ** (torch.iinfo(tensor.dtype).bits - 1)
        tensor = tensor.to(torch.float32) / full_scale
    else:
        raise DataError(f"audio: {what}: unsupported dtype {tensor.dtype}")
    return _checked(tensor, sample_rate, what=what)


def _checked(samples: Tensor, sample_rate: Any, *, what: str) -> Waveform:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise DataError(f"audio: {what}: sample rate must be an int, got {sample_rate!r}")
    if sample_rate <= 0:
        raise DataError(f"audio: {what}: sample rate must be positive, got {sample_rate}")
    if samples.shape[-1] == 0:
        raise DataError(f"audio: {what} has no samples")
    if samples.shape[0] == 0:
        raise DataError(f"audio: {what} has no channels")
    if not bool(torch.isfinite(samples).all()):
        raise DataError(f"audio: {what} contains NaN or infinite samples")
    return Waveform(samples.contiguous(), int(sample_rate))


def _shape(tensor: Tensor) -> str:
    return str(tuple(tensor.shape))
