"""Tasks: what a head learns, from a manifest's label cell to a target and from the head's
output to an answer a user reads.

A :class:`Task` holds a task's label space (its class names, in output order) and knows

- which classes a label cell names and how the cell becomes a target tensor (``encode``);
- how a prediction reads (``describe``: a class and its probability, or values);
- which head param the training data fills in (``size_param``, e.g. ``num_classes``);
- which metrics are better when lower (``direction``), for early stopping and ``best/``;
- how metric targets are typed and whether a confusion matrix makes sense.

A head reaches its task with :meth:`mmplug.Head.task_class`; the three built-ins are here:

- ``classification``: a cell holds one class name (a string, or a number written as one);
- ``multilabel``: a list of class names (a JSON list, or names joined by a separator in a
  CSV cell); the target is a 0/1 vector;
- ``regression``: a number or a list of numbers.

A run saves its task's label space as ``labels.json``, so that predictions name the classes
the model was trained on. Importing this module does not import torch (the config reads
class names with :func:`class_name`); encoding a label does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from mmplug.errors import ConfigError, ConfigIssue, DataError
from mmplug.plugins.registry import natural_key

if TYPE_CHECKING:
    from torch import Tensor
    from torchmetrics import Metric

Direction = Literal["min", "max"]


class Task(ABC):
    """A task and its label space.

    Subclasses are dataclasses holding the label space; the class attributes describe the
    task itself.

    Attributes:
        name: the task's name, as heads give it in ``Head.task``.
        size_param: the head param that ``mmplug train`` fills in from the training labels
            when a config leaves it null (``num_classes``); None if the data says nothing
            about the head's size.
        lower_is_better: names of the head's metrics for which lower is better (the loss
            always is).
    """

    name: ClassVar[str]
    size_param: ClassVar[str | None] = None
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def label_names(cls, cell: Any, separator: str) -> list[str]:
        """The class names one label cell holds.

        Tasks without classes accept any cell here (``encode`` checks it).

        Raises:
            DataError: the cell is not a label of this task (the caller names the row).
        """
        return []

    @classmethod
    @abstractmethod
    def from_labels(
        cls, names: Iterable[str], *, classes: Sequence[str] | None = None, separator: str = "|"
    ) -> Self:
        """The label space of a training split.

        Args:
            names: every class name the training labels hold (:meth:`label_names` of each
                cell), repeats allowed.
            classes: class names in output order, as the config gives them; default: the
                names found, sorted naturally (``2`` before ``10``).
            separator: joins a multilabel row's names in a CSV cell.
        """

    def size(self) -> int | None:
        """How many outputs the head needs for these labels; None if the labels don't say."""
        return None

    def with_outputs(self, count: int) -> Self:
        """This task for a head with ``count`` outputs.

        Raises:
            ConfigError: the head's size does not fit the labels.
        """
        return self

    @abstractmethod
    def encode(self, cell: Any) -> Tensor:
        """One label cell -> its target.

        Raises:
            DataError: the cell is not a label of this task (the caller names the row).
        """

    def metric_targets(self, targets: Tensor) -> Tensor:
        """Targets as the head's metrics take them (integers for class tasks)."""
        return targets

    def confusion(self, count: int) -> Metric | None:
        """A fresh confusion-matrix metric for ``count`` outputs, where the task has one."""
        return None

    def prior(self, targets: Tensor) -> Tensor | None:
        """The outputs ``[C]`` of the best constant guess from training ``targets`` (stacked
        as :meth:`encode` makes them): chance level, which a model must beat; optional.

        The loss and metrics of this guess are what ``mmplug train`` and ``mmplug compare``
        report as chance. The default (None) has no chance level.
        """
        return None

    @abstractmethod
    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """One sample's ``Head.predict`` output -> what a user reads."""

    @classmethod
    def direction(cls, metric: str) -> Direction:
        """Whether lower (``min``) or higher (``max``) values of a head metric are better."""
        return "min" if metric == "loss" or metric in cls.lower_is_better else "max"

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The label space as ``labels.json`` holds it (with ``task``: the name)."""

    @classmethod
    @abstractmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Read what :meth:`to_json` wrote."""


@dataclass(frozen=True)
class _ClassTask(Task):
    """A task whose outputs are classes: a label space of names in output order."""

    classes: tuple[str, ...] = ()
    separator: str = "|"

    @classmethod
    def from_labels(
        cls, names: Iterable[str], *, classes: Sequence[str] | None = None, separator: str = "|"
    ) -> Self:
        found = classes if classes is not None else sorted(set(names), key=natural_key)
        return cls(tuple(found), separator)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Class name -> output index (looked up for every row of every epoch)."""
        return {name: i for i, name in enumerate(self.classes)}

    def size(self) -> int:
        return len(self.classes)

    def with_outputs(self, count: int) -> Self:
        if count != len(self.classes):
            shown = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
            raise ConfigError(
                [
                    ConfigIssue(
                        "model.head",
                        f"the head has {count} outputs but the data has {len(self.classes)} "
                        f"classes ({shown}); leave {self.size_param} out to take it from the "
                        "data, or list data.classes",
                    )
                ]
            )
        return self

    def metric_targets(self, targets: Tensor) -> Tensor:
        return targets.long()

    def lookup(self, name: str) -> int:
        """The output index of class ``name``."""
        try:
            return self.index[name]
        except KeyError:
            shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
            raise DataError(f"label {name!r} is not one of the classes ({shown})") from None

    def class_of(self, index: int) -> str:
        """The name of output ``index``; an output beyond the classes has none of its own."""
        return self.classes[index] if index < len(self.classes) else f"<output {index}>"

    def named(self, values: list[float]) -> dict[str, float]:
        return {self.class_of(i): round(p, 6) for i, p in enumerate(values)}

    def to_json(self) -> dict[str, Any]:
        return {"task": self.name, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(tuple(data.get("classes", [])), data.get("separator", "|"))


@dataclass(frozen=True)
class ClassificationTask(_ClassTask):
    """Single-label classification: a cell names one class; the target is its index."""

    name: ClassVar[str] = "classification"
    size_param: ClassVar[str | None] = "num_classes"

    @classmethod
    def label_names(cls, cell: Any, separator: str) -> list[str]:
        return [class_name(cell)]

    def encode(self, cell: Any) -> Tensor:
        """A 0-d long tensor: the class's index."""
        import torch

        _require(cell)
        return torch.tensor(self.lookup(class_name(cell)), dtype=torch.long)

    def confusion(self, count: int) -> Metric:
        import torchmetrics

        return torchmetrics.ConfusionMatrix(task="multiclass", num_classes=count)

    def prior(self, targets: Tensor) -> Tensor:
        """Log class frequencies: the logits of always answering the training distribution."""
        import torch

        counts = torch.bincount(targets.long().flatten(), minlength=len(self.classes)).float()
        return (counts / counts.sum().clamp(min=1)).clamp(min=1e-6).log()

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """``{"label": the likeliest class, "probabilities": {class: p}}``."""
        values = prediction.float().tolist()
        return {
            "label": self.class_of(int(prediction.argmax())),
            "probabilities": self.named(values),
        }


@dataclass(frozen=True)
class MultilabelTask(_ClassTask):
    """Multi-label classification: a cell names any number of classes; the target is 0/1."""

    name: ClassVar[str] = "multilabel"
    size_param: ClassVar[str | None] = "num_labels"

    @classmethod
    def label_names(cls, cell: Any, separator: str) -> list[str]:
        return label_names(cell, separator)

    def encode(self, cell: Any) -> Tensor:
        """Float 0/1 ``[C]``."""
        import torch

        _require(cell)
        target = torch.zeros(len(self.classes))
        for name in label_names(cell, self.separator):
            target[self.lookup(name)] = 1.0
        return target

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """``{"labels": [classes with p >= 0.5], "probabilities": {class: p}}``."""
        values = prediction.float().tolist()
        chosen = [self.class_of(i) for i, p in enumerate(values) if p >= 0.5]
        return {"labels": chosen, "probabilities": self.named(values)}

    def prior(self, targets: Tensor) -> Tensor:
        """The logits of each label's training frequency."""
        return targets.float().reshape(-1, len(self.classes)).mean(0).clamp(1e-6, 1 - 1e-6).logit()

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "separator": self.separator}


@dataclass(frozen=True)
class RegressionTask(Task):
    """Regression: a cell holds a number, a list of numbers, or numbers joined by the
    separator; the target has one value per head output.

    Attributes:
        outputs: values per label (the head's outputs); None accepts any count.
        separator: joins numbers in a CSV cell.
    """

    name: ClassVar[str] = "regression"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"mae", "mse", "rmse"})

    outputs: int | None = None
    separator: str = "|"

    @classmethod
    def from_labels(
        cls, names: Iterable[str], *, classes: Sequence[str] | None = None, separator: str = "|"
    ) -> Self:
        return cls(None, separator)

    def with_outputs(self, count: int) -> Self:
        return dataclasses.replace(self, outputs=count)

    def encode(self, cell: Any) -> Tensor:
        """Float ``[]`` for one value, ``[n]`` for several."""
        import torch

        _require(cell)
        values = numbers(cell, self.separator)
        if self.outputs is not None and len(values) != self.outputs:
            raise DataError(
                f"expected {self.outputs} number{'s' if self.outputs > 1 else ''} (the head's "
                f"outputs), got {len(values)}: {cell!r}"
            )
        return torch.tensor(values, dtype=torch.float32).squeeze(0)

    def prior(self, targets: Tensor) -> Tensor:
        """The training mean of each value."""
        values = targets.float()
        return values.reshape(values.shape[0], -1).mean(0)

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """``{"value": a float, or a list for several outputs}``."""
        return {"value": prediction.float().tolist()}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task": self.name, "separator": self.separator}
        if self.outputs is not None:
            data["size"] = self.outputs
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(data.get("size"), data.get("separator", "|"))


#: The built-in tasks by name.
BUILTIN_TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ClassificationTask, MultilabelTask, RegressionTask)
}


def builtin_task(name: str) -> type[Task] | None:
    """The built-in task called ``name``, or None."""
    return BUILTIN_TASKS.get(name)


# -- reading label cells -----------------------------------------------------------------------


def is_missing(cell: Any) -> bool:
    """A label cell that holds nothing: None, NaN (a JSON ``NaN``, as pandas writes a missing
    value), or text that is empty or only white space."""
    if isinstance(cell, float):
        return math.isnan(cell)
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _require(cell: Any) -> None:
    if is_missing(cell):
        raise DataError("the label is missing")


def class_name(value: Any) -> str:
    """A classification cell as a class name: ``3``, ``"3"`` and ``3.0`` all name class ``3``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        # NaN is a missing label; infinity names no class
        raise DataError("the label is missing" if math.isnan(value) else f"no class is {value}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value).strip()
    raise DataError(f"a class label must be a string or a number, not {type(value).__name__}")


def label_names(value: Any, separator: str) -> list[str]:
    """A multilabel cell: a list of names, or names joined by ``separator``."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if isinstance(value, list | tuple):
        return [class_name(item) for item in value]
    raise DataError(f"a multilabel label must be a list of names, not {type(value).__name__}")


def numbers(value: Any, separator: str) -> list[float]:
    """A regression cell: a number, a list of numbers, or numbers joined by ``separator``."""
    items = value.split(separator) if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        items = [items]
    try:
        result = [float(item) for item in items if not isinstance(item, bool)]
    except (TypeError, ValueError):
        raise DataError(f"expected a number or a list of numbers, got {value!r}") from None
    if len(result) != len(items) or not result or not all(map(math.isfinite, result)):
        raise DataError(f"expected finite numbers, got {value!r}")
    return result
