"""The four interfaces every component implements: Modality, Encoder, Fusion and Head.

Data flows through them in this order::

    manifest value --Modality.load--> raw object (str, PIL image, waveform, ...)
    [raw, ...] --Encoder.preprocessor()--> {name: Tensor} --Encoder.forward--> EncoderOutput
    {key: EncoderOutput} + {key: present[B]} --Fusion.forward--> fused [B, F]
    fused --Head.forward--> outputs [B, C] --Head.loss(outputs, targets)--> scalar

(:class:`mmplug.data.pipeline.Pipeline` does the first two steps for a batch, in
data-loader workers; :class:`mmplug.model.multimodal.MultimodalModel` the rest.) Shapes:
``B`` batch, ``D`` an encoder's ``output_dim``, ``T`` tokens, ``F`` the fusion's
``output_dim``, ``C`` the head's ``output_dim``.

Beyond the abstract methods, each interface has optional methods with defaults (an
encoder's ``fit``, ``preprocessor``, ``save_fitted``, ``deterministic_preprocess``; a fusion's
``combines``, ``uses_tokens``; a head's ``task_class``): a component overrides them only when
it has something to add.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self

import torch
from torch import Tensor, nn

from mmplug.errors import ComponentError, DataError
from mmplug.kinds import KINDS

if TYPE_CHECKING:
    from torchmetrics import Metric

    from mmplug.model.tasks import Task


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


class Preprocessor(Protocol):
    """What :meth:`Encoder.preprocessor` returns: ``preprocess`` as a light, picklable object.

    Data-loader workers receive it (inside :class:`mmplug.data.pipeline.Pipeline`) instead of
    the encoder, so it must not hold the encoder's weights: a tokenizer, transforms, a filter
    bank and the settings they need.
    """

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]: ...


class EncoderPreprocessor:
    """The default :meth:`Encoder.preprocessor`: calls the encoder's own ``preprocess``.

    It holds the encoder, so workers receive its weights too; encoders with weights worth
    keeping out of workers return an object of their own.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return self.encoder.preprocess(raws, train=train)


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
    #: Whether ``preprocess(raws, train=True)`` is a function of ``raws`` alone, the same
    #: as with ``train=False`` (no augmentation, no random crop): what a frozen encoder
    #: needs for its outputs to be kept in the feature cache. False unless the encoder
    #: says so (a class attribute, or set in ``__init__`` from its params).
    deterministic_preprocess: bool = False
    #: Submodules frozen with :meth:`freeze_modules` ("" is the whole encoder).
    _frozen_modules: tuple[str, ...] = ()

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

    def preprocessor(self) -> Preprocessor:
        """``preprocess`` as a light, picklable object for data-loader workers; optional.

        The default wraps this encoder, weights included. An encoder with weights keeps an
        object holding only what preprocessing needs (a tokenizer, transforms), returns that
        same object every time, and has ``preprocess`` call it, so the two never differ. A
        pipeline may be made before :meth:`fit`: what fit learns (a vocabulary) must reach
        the object the encoder already handed out, so fit updates it rather than making a
        new one.
        """
        return EncoderPreprocessor(self)

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

    def freeze_modules(self, *names: str) -> None:
        """Freeze submodules for good: no gradients, and eval mode (dropout off, BatchNorm
        statistics fixed) even while the model trains.

        Args:
            names: submodule paths (``backbone.layer1``); none freezes the whole encoder.
        """
        targets = names or ("",)
        for name in targets:
            self.get_submodule(name).requires_grad_(False)
        self._frozen_modules = tuple(dict.fromkeys((*self._frozen_modules, *targets)))
        self.train(self.training)

    def train(self, mode: bool = True) -> Self:
        """Set training mode; what :meth:`freeze_modules` froze stays in eval mode."""
        super().train(mode and "" not in self._frozen_modules)
        for name in self._frozen_modules:
            if name:
                self.get_submodule(name).eval()
        return self


class Fusion(nn.Module, ABC):
    """Combines per-modality features into one vector per sample.

    Built with ``input_dims`` (modality key -> encoder ``output_dim``), wired by assembly.

    Attributes:
        output_dim: ``F``.
        combines: ``"features"`` (the default): the fusion combines the encoders' features
            and the head turns its output into the model's outputs. ``"outputs"``: it
            combines the outputs of one head per modality key (built on each encoder alone,
            as ``model.unimodal_heads``), its ``input_dims`` are the heads' ``output_dim``
            (``C`` for every key), it gets those outputs as ``pooled``, and what it returns
            (``[B, C]``) is the model's output: late fusion. Optional; a class attribute.
    """

    output_dim: int
    combines: ClassVar[Literal["features", "outputs"]] = "features"
    #: Whether ``forward`` reads the encoders' ``tokens``/``mask`` (the feature cache keeps
    #: them only then). True unless the fusion says it uses ``pooled`` alone.
    uses_tokens: bool = True

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

    @classmethod
    def task_class(cls) -> type[Task]:
        """The task this head learns, which reads label cells, names predictions and knows
        which metrics are better when lower; optional.

        The default looks up the built-in task named by the class attribute ``task``
        (``classification``, ``multilabel``, ``regression``). A head with a task of its own
        returns a :class:`mmplug.Task` subclass.

        Raises:
            ComponentError: ``task`` names no built-in task.
        """
        from mmplug.model.tasks import builtin_task

        name = getattr(cls, "task", None)
        task = builtin_task(name) if isinstance(name, str) else None
        if task is None:
            raise ComponentError(
                f"head {cls.__name__} has task {name!r}, which is not a built-in task "
                "(classification, multilabel, regression): give it a task_class() classmethod "
                "returning its own mmplug.Task"
            )
        return task


#: kind -> the interface its components implement, for every kind of :data:`KINDS`.
INTERFACES: dict[str, type] = dict(zip(KINDS, (Modality, Encoder, Fusion, Head), strict=True))
