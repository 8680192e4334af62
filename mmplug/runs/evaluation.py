"""Running a model over a labelled loader: loss, the head's ``torchmetrics`` metrics and,
where the task has one, a confusion matrix.

Used by the trainer (validation each epoch, the test split at the end) and by
``mmplug evaluate``; :func:`collect_predictions` keeps every row's prediction instead, for
``mmplug compare``'s late-fusion average.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mmplug.data.pipeline import LoadedBatch, Skipped
from mmplug.errors import MmplugError
from mmplug.model.devices import autocast
from mmplug.model.interfaces import Head
from mmplug.model.multimodal import MultimodalModel
from mmplug.model.tasks import Task


@dataclass
class Evaluation:
    """The outcome of one pass over a labelled split.

    Attributes:
        loss: the head's loss, averaged over samples.
        metrics: metric name -> value.
        unimodal_losses: key -> its unimodal head's loss, averaged over the samples that have
            the key (models with unimodal heads; not for a pass with a key blanked).
        count: samples evaluated.
        skipped: rows that could not be read (``on_error: skip``).
        confusion: ``[C, C]`` counts (rows: true class, columns: predicted), for
            classification when asked for.
    """

    loss: float
    metrics: dict[str, float]
    count: int
    skipped: list[Skipped] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    unimodal_losses: dict[str, float] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        """``{prefix_loss: ..., prefix_loss_<key>: ..., prefix_<metric>: ...}``."""
        return {
            f"{prefix}_loss": self.loss,
            **{f"{prefix}_loss_{k}": v for k, v in sorted(self.unimodal_losses.items())},
            **{f"{prefix}_{k}": v for k, v in self.metrics.items()},
        }


def batches(
    loader: Iterable[LoadedBatch], device: torch.device, skipped: list[Skipped]
) -> Iterator[LoadedBatch]:
    """The loader's batches moved to ``device``; skipped rows are appended to ``skipped``.

    Raises:
        DataError: a row could not be read and ``on_error`` is ``raise``.
    """
    for loaded in loader:
        loaded.raise_fatal()
        skipped.extend(loaded.skipped)
        if loaded.batch is None:
            continue
        targets = loaded.targets.to(device) if loaded.targets is not None else None
        yield LoadedBatch(loaded.batch.to(device), targets, loaded.indices, [])


@torch.no_grad()
def evaluate_loader(
    model: MultimodalModel,
    loader: Iterable[LoadedBatch],
    device: torch.device,
    task: Task,
    *,
    precision: str = "fp32",
    confusion: bool = False,
    progress: Callable[[], None] | None = None,
    blank: str | None = None,
) -> Evaluation:
    """Loss and metrics of ``model`` over a labelled loader (model put in eval mode).

    Args:
        task: the head's task (metric targets, the confusion matrix).
        confusion: also count a confusion matrix, if the task has one.
        progress: called after each batch.
        blank: a modality key made absent from every sample: how much the model relies
            on it.
    """
    head = model.head
    was_training = model.training
    model.eval()
    metrics = {name: metric.to(device) for name, metric in head.metrics().items()}
    matrix = task.confusion(head.output_dim) if confusion else None
    if matrix is not None:
        matrix = matrix.to(device)
    total, count = 0.0, 0
    unimodal: dict[str, list[float]] = {}  # key -> [loss sum, samples]
    skipped: list[Skipped] = []
    for loaded in batches(loader, device, skipped):
        assert loaded.batch is not None and loaded.targets is not None
        batch = loaded.batch if blank is None else loaded.batch.without(blank)
        with autocast(device, precision):
            output = model(batch)
        outputs = output.logits.float()
        targets = loaded.targets
        total += float(head.loss(outputs, targets)) * len(loaded.indices)
        count += len(loaded.indices)
        if blank is None:
            for key, loss in model.unimodal_losses(output, targets).items():
                rows = int(output.present[key].sum())
                sums = unimodal.setdefault(key, [0.0, 0])
                sums[0] += float(loss) * rows
                sums[1] += rows
        predictions = head.predict(outputs)
        metric_targets = task.metric_targets(targets)
        for metric in metrics.values():
            metric.update(predictions, metric_targets)
        if matrix is not None:
            matrix.update(predictions, metric_targets)
        if progress is not None:
            progress()
    model.train(was_training)
    values = {name: _compute(metric) if count else math.nan for name, metric in metrics.items()}
    return Evaluation(
        loss=total / count if count else float("nan"),
        metrics=values,
        count=count,
        skipped=skipped,
        confusion=matrix.compute().long().tolist() if matrix is not None and count else None,
        unimodal_losses={key: value / rows for key, (value, rows) in unimodal.items()},
    )


def _compute(metric: Any) -> float:
    """A metric's value; NaN where the split can't define it (R2 of one sample)."""
    with warnings.catch_warnings():
        # e.g. AUROC when a class never occurs in the split: torchmetrics warns and says 0
        warnings.simplefilter("ignore")
        try:
            value: Tensor = metric.compute()
        except (ValueError, RuntimeError):
            return math.nan
    return float(value.float().mean()) if value.numel() > 1 else float(value)


@dataclass
class Predictions:
    """Every row's prediction over a labelled loader.

    Attributes:
        rows: manifest row index of each prediction, in loader order.
        predictions: ``Head.predict`` of each row, ``[N, ...]``, on the CPU.
        targets: ``[N, ...]``.
        present: per modality key, bool ``[N]``.
    """

    rows: list[int]
    predictions: Tensor
    targets: Tensor
    present: dict[str, Tensor]


@torch.no_grad()
def collect_predictions(
    model: MultimodalModel, loader: Iterable[LoadedBatch], device: torch.device
) -> Predictions:
    """Run ``model`` (in eval mode) over a labelled loader, keeping each row's prediction.

    Raises:
        DataError: a row could not be read and ``on_error`` is ``raise``.
    """
    was_training = model.training
    model.eval()
    rows: list[int] = []
    predictions, targets = [], []
    present: dict[str, list[Tensor]] = {key: [] for key in model.keys}
    for loaded in batches(loader, device, []):
        assert loaded.batch is not None and loaded.targets is not None
        outputs = model(loaded.batch).logits.float()
        predictions.append(model.head.predict(outputs).cpu())
        targets.append(loaded.targets.cpu())
        for key in model.keys:
            present[key].append(loaded.batch.present[key].cpu())
        rows += loaded.indices
    model.train(was_training)
    if not rows:
        raise MmplugError("no row could be read")
    return Predictions(
        rows,
        torch.cat(predictions),
        torch.cat(targets),
        {key: torch.cat(values) for key, values in present.items()},
    )


def score(head: Head, task: Task, predictions: Tensor, targets: Tensor) -> dict[str, float]:
    """The head's metrics of ``predictions`` (``Head.predict`` outputs) against ``targets``."""
    values = {}
    metric_targets = task.metric_targets(targets)
    for name, metric in head.metrics().items():
        metric.update(predictions, metric_targets)
        values[name] = _compute(metric)
    return values
