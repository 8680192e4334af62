"""``mel-cnn``: log-mel spectrogram and a small 2-D CNN, for training from scratch.

Padding never changes a clip's features: a clip alone and the same clip padded beside a
longer one give the same ``pooled`` (in eval mode; dropout aside, also in training). Three
choices make that exact rather than approximate:

- the spectrogram is computed per clip in ``preprocess``, on the clip's own samples, so the
  STFT's centre padding at the clip's end reflects the clip and not the zeros after it;
- after every conv, activations beyond a clip's frames are set to zero, which is what the
  conv's own zero padding shows a clip that is alone, and pooling is a ``ceil_mode`` max pool
  after a ReLU (a padded zero never wins over a value >= 0);
- normalization is per frame (over channels and frequency), never over time or the batch,
  so neither padding nor batch composition enters the statistics; train and eval behave alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchaudio  # type: ignore[import-untyped]
from torch import Tensor, nn

from mmplug import Encoder, EncoderOutput
from mmplug_audio._wave import (
    as_waveform,
    length_mask,
    masked_mean,
    prepare_clip,
    seconds_to_samples,
)

# Added to the mel power before the log: about -138 dB, below 16-bit quantization noise.
_LOG_FLOOR = 1e-6


class LogMelPreprocessor:
    """Clips -> padded log-mel spectrograms, each computed on its clip alone.

    Not part of the encoder module: it runs in data-loader workers on the CPU, which get it
    without the CNN's weights, and as a submodule ``model.to("cuda")`` would move its filter
    bank away from the CPU data.

    Args:
        sample_rate: rate clips are resampled to (Hz).
        max_samples: crop length, in samples at ``sample_rate``.
        n_fft: FFT size and window length.
        hop_length: samples between frames.
        n_mels: mel bands.
    """

    def __init__(
        self, sample_rate: int, max_samples: int, n_fft: int, hop_length: int, n_mels: int
    ) -> None:
        self.sample_rate = sample_rate
        self.max_samples = max_samples
        # Reflect padding at the STFT's edges needs more than n_fft // 2 samples.
        self.min_samples = n_fft // 2 + 1
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            center=True,
            pad_mode="reflect",
            power=2.0,
        )

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Clips -> padded log-mel spectrograms.

        Args:
            raws: ``n`` :class:`~mmplug_audio.modality.Waveform` (or ``(array, rate)`` pairs).
            train: crop long clips at random instead of at the centre.

        Returns:
            ``mel`` ``[n, n_mels, T]`` (zero beyond each clip's frames) and ``frames`` ``[n]``
            (long), each clip's number of valid frames.
        """
        mels = []
        for index, raw in enumerate(raws):
            clip = prepare_clip(
                as_waveform(raw, index),
                sample_rate=self.sample_rate,
                max_samples=self.max_samples,
                min_samples=self.min_samples,
                train=train,
            )
            mels.append(self.log_mel(clip))
        frames = torch.tensor([mel.shape[-1] for mel in mels], dtype=torch.long)
        padded = torch.zeros(len(mels), mels[0].shape[0], int(frames.max()))
        for row, mel in enumerate(mels):
            padded[row, :, : mel.shape[-1]] = mel
        return {"mel": padded, "frames": frames}

    def log_mel(self, clip: Tensor) -> Tensor:
        """``clip`` ``[time]`` -> ``[n_mels, 1 + time // hop_length]``."""
        with torch.no_grad():
            mel: Tensor = self.transform(clip)
        return torch.log(mel + _LOG_FLOOR)


class FrameNorm(nn.Module):
    """Normalizes each time frame over channels and frequency, with a per-channel affine.

    Args:
        channels: ``C``.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[n, C, F, T]`` -> the same shape."""
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = x.var(dim=(1, 2), keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvBlock(nn.Module):
    """3x3 conv, per-frame norm, ReLU, 2x2 max pool (ceil mode) and dropout, mask-aware.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        dropout: dropout probability after pooling.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = FrameNorm(out_channels)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """One block.

        Args:
            x: ``[n, C_in, F, T]``, zero beyond each clip's frames.
            frames: ``[n]`` long, each clip's valid frames.

        Returns:
            ``[n, C_out, ceil(F / 2), ceil(T / 2)]``, zero beyond each clip's frames, and the
            new frame counts ``ceil(frames / 2)``.
        """
        x = torch.relu(self.norm(self.conv(x)))
        x = x * length_mask(frames, x.shape[-1])[:, None, None, :].to(x.dtype)
        x = self.dropout(self.pool(x))
        return x, torch.div(frames + 1, 2, rounding_mode="floor")


class MelCNNEncoder(Encoder):
    """Log-mel spectrogram and a small 2-D CNN; ``tokens`` are its time frames.

    ``preprocess`` mixes each clip to mono, crops it to ``max_seconds`` (at random in training,
    the centre otherwise), resamples it to ``sample_rate`` and computes its log-mel
    spectrogram; the batch is padded to its longest clip. ``forward`` runs the conv blocks
    (each halves frequency and time), projects each frame to ``output_dim`` and averages the
    valid frames.

    Args:
        sample_rate: rate clips are resampled to (Hz).
        max_seconds: crop length.
        n_mels: mel bands.
        n_fft: FFT size and window length, in samples.
        hop_length: samples between frames.
        channels: output channels of each conv block.
        dropout: dropout after each block.
        output_dim: ``D``.
        freeze: no trainable parameters; the encoder stays in eval mode.
    """

    modality = "audio"

    def __init__(
        self,
        sample_rate: int = 16000,
        max_seconds: float = 10.0,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        channels: Sequence[int] = (32, 64, 128),
        dropout: float = 0.1,
        output_dim: int = 256,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.freeze = freeze
        self._preprocessor = LogMelPreprocessor(
            sample_rate, seconds_to_samples(max_seconds, sample_rate), n_fft, hop_length, n_mels
        )
        blocks = []
        in_channels, bands = 1, n_mels
        for out_channels in channels:
            blocks.append(ConvBlock(in_channels, out_channels, dropout))
            in_channels, bands = out_channels, (bands + 1) // 2
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Linear(in_channels * bands, output_dim)
        if freeze:
            self.freeze_modules()

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Clips -> padded log-mel spectrograms (see :class:`LogMelPreprocessor`)."""
        return self._preprocessor(raws, train=train)

    def preprocessor(self) -> LogMelPreprocessor:
        """The filter bank and crop settings, without the CNN's weights."""
        return self._preprocessor

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        """Encode.

        Args:
            inputs: ``mel`` ``[n, n_mels, T]`` and ``frames`` ``[n]`` from :meth:`preprocess`.

        Returns:
            ``pooled`` ``[n, D]``, the mean of the valid ``tokens`` ``[n, T', D]``, with
            ``T' = ceil(T / 2 ** len(channels))``, and their ``mask`` ``[n, T']``.
        """
        frames = inputs["frames"]
        x = inputs["mel"].to(self.project.weight.dtype)
        # The padded part of the log-mel must be 0, the value the first conv's own zero
        # padding shows a clip that is alone (log of a zero mel would be log(_LOG_FLOOR)).
        x = (x * length_mask(frames, x.shape[-1])[:, None, :].to(x.dtype)).unsqueeze(1)
        for block in self.blocks:
            x, frames = block(x, frames)
        tokens = self.project(x.flatten(1, 2).transpose(1, 2))  # [n, T', C * F'] -> [n, T', D]
        mask = length_mask(frames, tokens.shape[1])
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        return EncoderOutput(pooled=masked_mean(tokens, mask), tokens=tokens, mask=mask)
