"""Warnings while training: a model that ignores a modality, or learns nothing.

:class:`Watch` reads each epoch's metrics line and says, once per run and per finding:

- when blanking a modality out of the validation split (``val_without_<key>_*``, see
  ``train.reliance``) leaves every validation metric unchanged: the model does not use it;
- when a loss (the fused one, or a unimodal head's) has stayed at chance level for
  :data:`PATIENCE` epochs: the loss of always answering the training label distribution
  (``ln C`` for ``C`` balanced classes; :meth:`mmplug.Task.prior`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmplug.data.pipeline import ManifestDataset
from mmplug.errors import DataError
from mmplug.model.multimodal import MultimodalModel
from mmplug.model.tasks import Task

#: Epochs a loss must stay at chance level before the warning.
PATIENCE = 3
#: "At chance": within this fraction of the chance loss.
CHANCE_TOLERANCE = 0.02
#: At the end of a run, a key whose blanking moves the monitored metric by less than this
#: fraction of its value is one the model barely uses.
RELIANCE_TOLERANCE = 0.02


def training_targets(dataset: ManifestDataset) -> torch.Tensor | None:
    """The targets of every training row whose label reads (None if none does)."""
    if dataset.task is None:
        return None
    targets = []
    for index in range(len(dataset)):
        try:
            targets.append(dataset.task.encode(dataset.cell(index, dataset.label_column)))
        except (DataError, KeyError):
            continue
    return torch.stack(targets) if targets else None


def chance_loss(model: MultimodalModel, task: Task, targets: torch.Tensor | None) -> float | None:
    """The head's loss of the constant guess :meth:`Task.prior` on the training targets."""
    if targets is None:
        return None
    prior = task.prior(targets)
    if prior is None:
        return None
    outputs = prior.to(torch.float32).expand(targets.shape[0], -1)
    with torch.no_grad():
        return float(model.head.loss(outputs, targets))


class Watch:
    """Reads each epoch's metrics line and returns the warnings it calls for."""

    def __init__(
        self, model: MultimodalModel, task: Task, train: ManifestDataset, monitor: str
    ) -> None:
        self.keys = model.keys
        self.monitor = monitor
        self.chance = chance_loss(model, task, training_targets(train))
        unimodal = model.unimodal_heads is not None and len(self.keys) > 1
        self.losses = ["train_loss", *(f"train_loss_{key}" for key in self.keys if unimodal)]
        self.at_chance: dict[str, int] = dict.fromkeys(self.losses, 0)
        self.said: set[str] = set()

    def check(self, line: dict[str, Any]) -> list[str]:
        """The warnings this epoch's ``line`` calls for, each said once per run."""
        found = {}
        for key in self.keys:
            prefix = f"val_without_{key}_"
            blanked = {k.removeprefix(prefix): v for k, v in line.items() if k.startswith(prefix)}
            metrics = {name: line.get(f"val_{name}") for name in blanked if name != "loss"}
            if metrics and all(_same(metrics[name], blanked[name]) for name in metrics):
                shown = ", ".join(f"val_{name} {value:.4f}" for name, value in metrics.items())
                found[f"ignores {key}"] = (
                    f"blanking {key!r} out of the val split changes no metric ({shown} either "
                    f"way): the model does not use {key!r}; see docs/training.md, balanced "
                    "training"
                )
        if self.chance is not None:
            for name in self.losses:
                value = line.get(name)
                at_chance = value is not None and value >= self.chance * (1 - CHANCE_TOLERANCE)
                self.at_chance[name] = self.at_chance[name] + 1 if at_chance else 0
                if self.at_chance[name] >= PATIENCE:
                    what = "the model" if name == "train_loss" else f"the {name[11:]!r} head"
                    found[f"chance {name}"] = (
                        f"{name} has stayed at chance level ({self.chance:.4f}, the loss of "
                        f"always answering the training label distribution) for {PATIENCE} "
                        f"epochs: {what} learns nothing; try another train.lr, less dropout or "
                        "a smaller encoder"
                    )
        news = [message for reason, message in found.items() if reason not in self.said]
        self.said.update(found)
        return news

    def conclude(self, best: dict[str, Any]) -> list[str]:
        """The warnings about the finished model, from the metrics line of its best epoch:
        each key whose blanking moves the monitored metric (``val_loss`` when the monitor is
        not a validation metric) by less than :data:`RELIANCE_TOLERANCE` of its value, unless
        :meth:`check` already said the model does not use it."""
        metric = self.monitor if self.monitor.startswith("val_") else "val_loss"
        value = best.get(metric)
        if value is None or not math.isfinite(value) or value == 0:
            return []
        found = []
        for key in self.keys:
            blanked = best.get(f"val_without_{key}_{metric.removeprefix('val_')}")
            if blanked is None or f"ignores {key}" in self.said or not math.isfinite(blanked):
                continue
            change = abs(blanked - value) / abs(value)
            if change < RELIANCE_TOLERANCE:
                found.append(
                    f"the model barely uses {key!r}: at its best epoch ({best['epoch']}), "
                    f"blanking {key!r} out of the val split moves {metric} by "
                    f"{100 * change:.1f}% ({value:.4f} with it, {blanked:.4f} without); "
                    "see docs/training.md, balanced training"
                )
        return found


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9
