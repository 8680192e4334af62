"""The four interfaces every component implements: Modality, Encoder, Fusion and Head.

Data flows through them in this order::

    manifest value --Modality.load--> raw object (str, PIL image, waveform, ...)
    [raw, ...] --Encoder.preprocess--> {name: Tensor} --Encoder.forward--> EncoderOutput
    {key: EncoderOutput} + {key: present[B]} --Fusion.forward--> fused [B, F]
    fused --Head.forward--> outputs [B, C] --Head.loss(outputs, targets)--> scalar

Shapes: ``B`` batch, ``D`` an encoder's ``output_dim``, ``T`` tokens, ``F`` the fusion's
``output_dim``, ``C`` the head's ``output_dim``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mmplug.errors import DataError

if TYPE_CHECKING:
    from torchmetrics import Metric


@dataclass
class EncoderOutput:
    """What an encoder returns for a batch.

    Attributes:
        pooled: one vector per sample, ``[B, D]``.
        tokens: optional sequence features, ``[B, T, D]``, for fusions that attend over tokens.
        mask: ``[B, T]`` bool, True for a real token; given whenever ``tokens`` is.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.pooled.dim() != 2:
            raise ValueError(f"pooled must be [B, D], got shape {tuple(self.pooled.shape)}")
        if self.tokens is None:
            if self.mask is not None:
                raise ValueError("mask given without tokens")
            return
        batch, dim = self.pooled.shape
        if self.tokens.dim() != 3 or self.tokens.shape[0] != batch or self.tokens.shape[2] != dim:
            raise ValueError(
                f"tokens must be [B={batch}, T, D={dim}], got shape {tuple(self.tokens.shape)}"
            )
        if self.mask is None:
            raise ValueError("tokens given without mask; use an all-true mask if nothing is padded")
        if self.mask.shape != self.tokens.shape[:2] or self.mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool [B, T]={tuple(self.tokens.shape[:2])}, "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}"
            )


class Modality(ABC):
    """Turns a manifest value into the raw object that encoders of this modality take.

    Attributes:
        name: the modality's registered name (``text``, ``image``).
    """

    name: str

    @abstractmethod
    def load(self, value: Any, *, root: str | Path | None = None) -> Any:
        """Load one value.

        Args:
            value: a manifest cell (a path relative to ``root``, or an inline value) or an
                object already in raw form (a Python caller may pass a ``PIL.Image``).
            root: the folder relative paths resolve against (the manifest's folder).

        Raises:
            DataError: the value can't be loaded; the message names it.
        """

    @staticmethod
    def resolve_path(value: str | Path, root: str | Path | None = None) -> Path:
        """Resolve a manifest path against ``root``; a missing file is a :class:`DataError`."""
        path = Path(value).expanduser()
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        if not path.is_file():
            raise DataError(f"file not found: {str(value)!r} (looked for {path})")
        return path


class Encoder(nn.Module, ABC):
    """Encodes a batch of raw objects of one modality.

    Encoders never see absent values: assembly passes only the samples that have the
    modality and puts the outputs back in batch order.

    Attributes:
        modality: the name of the modality consumed.
        output_dim: ``D``, the size of ``pooled`` (and of each token).
    """

    modality: str
    output_dim: int

    @abstractmethod
    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Batch raw objects into tensors (tokenize, transform, pad).

        Runs in data-loader workers, so it must not depend on the module's device.

        Args:
            raws: ``n`` raw objects as :meth:`Modality.load` returns them.
            train: apply training-time augmentation.

        Returns:
            Named tensors, each with a leading dimension of ``n``.
        """

    @abstractmethod
    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        """Encode a preprocessed batch into ``pooled`` ``[n, D]`` (and optional tokens)."""

    def fit(self, raws: list[Any]) -> None:
        """Learn preprocessing from the training split (e.g. a vocabulary); optional.

        The default does nothing: most encoders have nothing to learn before training.
        An encoder that learns something here saves it with :meth:`save_fitted`.
        """

    def save_fitted(self, directory: Path) -> None:
        """Write what :meth:`fit` learned (e.g. ``tokenizer.json``) into ``directory``.

        Called when a model is saved; ``directory`` exists, is empty and belongs to this
        encoder alone. Weights are saved separately (the ``state_dict``); this is for what
        is not a tensor. The default writes nothing.
        """

    def load_fitted(self, directory: Path) -> None:
        """Restore what :meth:`save_fitted` wrote, before the weights are loaded.

        Called only when :meth:`save_fitted` wrote something. The default does nothing.
        """


class Fusion(nn.Module, ABC):
    """Combines per-modality features into one vector per sample.

    Built with ``input_dims`` (modality key -> encoder ``output_dim``), wired by assembly.

    Attributes:
        output_dim: ``F``.
    """

    output_dim: int

    @abstractmethod
    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse.

        Args:
            features: per key, an :class:`EncoderOutput` over the whole batch (rows of absent
                samples are zeros).
            present: per key, bool ``[B]``: whether the sample has that modality.

        Returns:
            ``[B, F]``.
        """


class Head(nn.Module, ABC):
    """The task layer: outputs, loss, predictions and metrics.

    Attributes:
        task: ``classification``, ``multilabel``, ``regression`` or a plugin's own task.
        output_dim: ``C``, the size of each output row.
    """

    task: str
    output_dim: int

    @abstractmethod
    def forward(self, fused: Tensor) -> Tensor:
        """``fused`` ``[B, F]`` -> outputs ``[B, C]`` (logits, or values for regression)."""

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """A scalar loss for ``outputs`` ``[B, C]`` against ``targets``."""

    @abstractmethod
    def predict(self, outputs: Tensor) -> Tensor:
        """Outputs -> what a user reads: probabilities ``[B, C]``, or values."""

    @abstractmethod
    def metrics(self) -> dict[str, Metric]:
        """Fresh torchmetrics metrics, updated with ``(predict(outputs), targets)``."""
