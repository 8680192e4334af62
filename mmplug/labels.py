"""Labels: manifest label cells -> target tensors, and head outputs -> answers a user reads.

The task comes from the head (``Head.task``):

- ``classification``: a cell holds one class name (a string, or an int written as one);
  names map to indices in the order of ``classes``.
- ``multilabel``: a cell holds a list of class names (a JSON list, or in a CSV cell names
  joined by the separator); the target is a 0/1 vector.
- anything else (``regression``, a plugin's task): a number or a list of numbers.

The mapping is saved with a run as ``labels.json`` so that predictions name the classes the
model was trained on.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmplug.errors import DataError
from mmplug.registry import natural_key

if TYPE_CHECKING:  # torch is imported when a label is encoded: sections.py uses class_name
    from torch import Tensor

CLASS_TASKS = ("classification", "multilabel")


@dataclass(frozen=True)
class Labels:
    """How one task's labels are read and named.

    Attributes:
        task: the head's task.
        classes: class names in output order (classification and multilabel only).
        separator: joins a multilabel row's names in a CSV cell.
        size: for other tasks, how many numbers a label has (the head's outputs); None
            accepts any.
    """

    task: str
    classes: list[str] = field(default_factory=list)
    separator: str = "|"
    size: int | None = None

    @functools.cached_property  # looked up for every row of every epoch
    def index(self) -> dict[str, int]:
        """Class name -> output index."""
        return {name: i for i, name in enumerate(self.classes)}

    @classmethod
    def from_values(
        cls,
        task: str,
        values: Iterable[Any],
        *,
        classes: Sequence[str] | None = None,
        separator: str = "|",
        size: int | None = None,
    ) -> Labels:
        """The labels of ``task`` with the classes given, or else the sorted names in ``values``.

        Missing values (None, "") are passed over; :meth:`encode` reports them per row.

        Raises:
            DataError: a value is not a label of this task.
        """
        if task not in CLASS_TASKS:
            return cls(task, [], separator, size)
        if classes is None:
            names: set[str] = set()
            for value in values:
                if value is None or value == "":
                    continue
                if task == "classification":
                    names.add(class_name(value))
                else:
                    names.update(label_names(value, separator))
            classes = sorted(names, key=natural_key)
        return cls(task, list(classes), separator)

    def encode(self, value: Any) -> Tensor:
        """One label cell -> its target.

        Returns:
            classification: a 0-d long tensor; multilabel: float 0/1 ``[C]``; otherwise
            float ``[]`` or ``[n]``.

        Raises:
            DataError: the cell is not a label of this task (the caller names the row).
        """
        import torch

        if value is None or value == "":
            raise DataError("the label is missing")
        if self.task == "classification":
            return torch.tensor(self._lookup(class_name(value)), dtype=torch.long)
        if self.task == "multilabel":
            target = torch.zeros(len(self.classes))
            for name in label_names(value, self.separator):
                target[self._lookup(name)] = 1.0
            return target
        values = numbers(value, self.separator)
        if self.size is not None and len(values) != self.size:
            raise DataError(
                f"expected {self.size} number{'s' if self.size > 1 else ''} (the head's "
                f"outputs), got {len(values)}: {value!r}"
            )
        return torch.tensor(values, dtype=torch.float32).squeeze(0)

    def _lookup(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
            raise DataError(f"label {name!r} is not one of the classes ({shown})") from None

    def describe(self, probabilities: Tensor) -> dict[str, Any]:
        """One sample's ``Head.predict`` output -> what a user reads.

        Returns:
            classification: ``{"label", "probabilities": {class: p}}``; multilabel:
            ``{"labels": [classes with p >= 0.5], "probabilities"}``; otherwise
            ``{"value": float or list}``.
        """
        values = probabilities.float().tolist()
        if self.task == "classification":
            best = int(probabilities.argmax())
            return {"label": self._name(best), "probabilities": self._named(values)}
        if self.task == "multilabel":
            chosen = [self._name(i) for i, p in enumerate(values) if p >= 0.5]
            return {"labels": chosen, "probabilities": self._named(values)}
        return {"value": values}

    def _name(self, index: int) -> str:
        # A head may have more outputs than the data had classes; those have no name.
        return self.classes[index] if index < len(self.classes) else f"<output {index}>"

    def _named(self, values: list[float]) -> dict[str, float]:
        return {self._name(i): round(p, 6) for i, p in enumerate(values)}

    def to_json(self) -> str:
        """The contents of ``labels.json``."""
        data: dict[str, Any] = {"task": self.task}
        if self.task in CLASS_TASKS:
            data["classes"] = self.classes
        if self.task == "multilabel":
            data["separator"] = self.separator
        if self.size is not None:
            data["size"] = self.size
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Labels:
        """Read what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            str(data["task"]),
            list(data.get("classes", [])),
            data.get("separator", "|"),
            data.get("size"),
        )


def class_name(value: Any) -> str:
    """A classification cell as a class name: ``3``, ``"3"`` and ``3.0`` all name class ``3``."""
    if isinstance(value, bool):
        return str(value).lower()
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
