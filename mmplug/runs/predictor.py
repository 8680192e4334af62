"""Using a trained run: :func:`load` a run directory, then predict or evaluate.

``load(run_dir, registry)`` checks that the plugins the run used are installed (a missing one
is an error naming it, another version a warning), rebuilds the model by name from the
checkpoint's config, loads its weights and fitted preprocessing, and returns a
:class:`Predictor`. Nothing here imports the training loop.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmplug.data.manifest import read_labelled_manifest, read_manifest
from mmplug.data.pipeline import ManifestDataset, Pipeline, make_loader
from mmplug.errors import DataError, MmplugError
from mmplug.model.checkpoint import load_model
from mmplug.model.config import load_config
from mmplug.model.devices import resolve_device
from mmplug.model.multimodal import Batch, MultimodalModel
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import Task
from mmplug.plugins.registry import Registry
from mmplug.runs.evaluation import Evaluation, Predictions, collect_predictions, evaluate_loader
from mmplug.runs.rundir import BEST, CONFIG, LAST, RunDir


class Predictor:
    """A trained model with its data pipeline and task, ready to predict.

    Attributes:
        model: the model, in eval mode, on ``device``.
        pipeline: loads and preprocesses samples for it.
        task: the head's task with the run's class names.
        data: the run's ``data`` section (columns, label column, error handling).
    """

    def __init__(
        self,
        model: MultimodalModel,
        task: Task,
        data: DataConfig,
        device: torch.device,
        *,
        source: str = "the model",
    ) -> None:
        self.source = source
        self.model = model.to(device).eval()
        self.pipeline = Pipeline.from_model(model)
        self.task = task
        self.data = data
        self.device = device

    @property
    def keys(self) -> list[str]:
        """The model's modality keys."""
        return self.model.keys

    @torch.no_grad()
    def predict(
        self,
        samples: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        root: str | Path | None = None,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Predict samples given as ``{key: value}`` (a path, an inline value or a raw object).

        A key left out, or None, is an absent modality. One mapping is one sample.

        Returns:
            One dict per sample, e.g. ``{"label": "cat", "probabilities": {"cat": 0.9, ...}}``
            (see the task's ``describe``).

        Raises:
            DataError: a value can't be loaded (names the sample and key).
        """
        if isinstance(samples, Mapping):
            samples = [samples]
        loaded = []
        for index, sample in enumerate(samples):
            self.pipeline.check_keys(sample, f"sample {index}")
            loaded.append(self.pipeline.load(sample, root=root, where=_sample_key(index)))
        results: list[dict[str, Any]] = []
        for start in range(0, len(loaded), batch_size):
            batch = self._collate(loaded[start : start + batch_size], start).to(self.device)
            names = [f"sample {i}" for i in range(start, start + batch.size)]
            results += self._describe(self.model(batch).logits, names)
        return results

    def _collate(self, samples: list[dict[str, Any]], start: int) -> Batch:
        """Batch ``samples`` (the ``start``-th onwards); a value the preprocessing refuses is
        an error naming its sample (found by collating them one at a time)."""
        try:
            return self.pipeline.collate(samples)
        except DataError:
            for offset, exc in self.pipeline.refused(samples)[:1]:
                raise DataError(f"sample {start + offset}, {exc}") from exc
            raise

    def _describe(self, logits: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
        """Each row's prediction; non-finite outputs are an error naming the rows."""
        finite = torch.isfinite(logits.float()).flatten(1).all(dim=1).tolist()
        if not all(finite):
            bad = [name for name, ok in zip(names, finite, strict=True) if not ok]
            raise MmplugError(
                f"{self.source} gave non-finite outputs (nan or inf) for {', '.join(bad[:5])}"
                f"{' and more' if len(bad) > 5 else ''}: its weights are damaged or its "
                "training diverged; use another checkpoint, or train again"
            )
        predictions = self.model.head.predict(logits.float()).cpu()
        return [self.task.describe(row) for row in predictions]

    def predict_manifest(
        self,
        path: str | Path,
        *,
        keep: Sequence[str] = (),
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """Predict every row of a manifest, in order: ``{"row": line, **kept, **prediction}``.

        A column the manifest lacks is absent for every row (one with none of the model's
        columns is an error). A row that can't be read is an error, or with the run's
        ``data.on_error: skip`` a ``{"row": line, **kept, "error": ...}`` entry, so that
        every row has an output line.

        Args:
            keep: manifest columns copied into each output line (an id column, say).

        Raises:
            DataError: a ``keep`` column the manifest does not have.
        """
        manifest = read_manifest(path)
        for column in keep:
            manifest.require_column(column, "given with --keep")
        dataset = ManifestDataset.from_config(manifest, self.pipeline, self.data, missing="absent")
        loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)
        lines = {line: index for index, line in enumerate(manifest.lines)}

        def kept(line: int) -> dict[str, Any]:
            row = manifest.rows[lines[line]]
            return {"row": line, **{column: row.get(column) for column in keep}}

        for loaded in loader:
            loaded.raise_fatal()
            results: dict[int, dict[str, Any]] = {}
            for skipped in loaded.skipped:
                results[skipped.row] = {**kept(skipped.row), "error": skipped.error}
            if loaded.batch is not None:
                with torch.no_grad():  # not around the yield: the caller's code runs there
                    logits = self.model(loaded.batch.to(self.device)).logits
                names = [f"row {manifest.lines[i]} of {path}" for i in loaded.indices]
                outputs = self._describe(logits, names)
                for index, output in zip(loaded.indices, outputs, strict=True):
                    line = manifest.lines[index]
                    results[line] = {**kept(line), **output}
            yield from (results[line] for line in sorted(results))

    def evaluate(
        self, path: str | Path, *, batch_size: int = 32, num_workers: int = 0
    ) -> Evaluation:
        """Loss, metrics and (where the task has one) the confusion matrix on a labelled
        manifest; a column it lacks is absent in every row, as in :meth:`predict_manifest`."""
        manifest = read_labelled_manifest(path, self.data.label)
        dataset = ManifestDataset.from_config(
            manifest, self.pipeline, self.data, task=self.task, missing="absent"
        )
        loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)
        result = evaluate_loader(self.model, loader, self.device, self.task, confusion=True)
        if result.count and not math.isfinite(result.loss):
            raise MmplugError(
                f"{self.source} gave a non-finite loss ({result.loss}) on {path}: its weights "
                "are damaged or its training diverged; use another checkpoint, or train again"
            )
        return result

    def predictions(
        self, path: str | Path, *, batch_size: int = 32, num_workers: int = 0
    ) -> Predictions:
        """Every row's prediction and target on a labelled manifest (rows that can't be read
        are left out with the run's ``data.on_error: skip``)."""
        manifest = read_labelled_manifest(path, self.data.label)
        dataset = ManifestDataset.from_config(
            manifest, self.pipeline, self.data, task=self.task, missing="absent"
        )
        loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)
        return collect_predictions(self.model, loader, self.device)


def _sample_key(index: int) -> Callable[[str], str]:
    """How errors name a value of the ``index``-th sample given to ``predict``."""
    return lambda key: f"sample {index}, key {key!r}"


def load(
    run_dir: str | Path,
    registry: Registry,
    *,
    checkpoint: str = BEST,
    device: str = "auto",
) -> Predictor:
    """Load a run directory's checkpoint (``best`` or ``last``) as a :class:`Predictor`.

    Raises:
        MmplugError: not a run directory, no such checkpoint, or a plugin the run used is not
            installed (named, with the ``pip install`` line).
    """
    if checkpoint not in (BEST, LAST):
        close = difflib.get_close_matches(checkpoint, (BEST, LAST), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise MmplugError(f"checkpoint must be {BEST!r} or {LAST!r}, not {checkpoint!r}{hint}")
    run = RunDir.open(run_dir)
    run.check_plugins(registry)
    config = load_config(run.config_data())
    if config.data is None:
        raise MmplugError(f"{run.path / CONFIG} has no data section")
    model = load_model(run.checkpoint(checkpoint), registry)
    device_ = resolve_device(device, "device")
    where = f"{run.path} ({checkpoint}/)"
    return Predictor(model, run.task(model.head), config.data, device_, source=where)


def evaluate(
    run_dir: str | Path,
    data: str | Path,
    registry: Registry,
    *,
    checkpoint: str = BEST,
    device: str = "auto",
    batch_size: int = 32,
) -> Evaluation:
    """Evaluate a run's checkpoint on the labelled manifest ``data``."""
    predictor = load(run_dir, registry, checkpoint=checkpoint, device=device)
    return predictor.evaluate(data, batch_size=batch_size)
