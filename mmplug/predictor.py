"""Using a trained run: :func:`load` a run directory, then predict or evaluate.

``mmplug.load(run_dir)`` checks that the plugins the run used are installed (a missing one is
an error naming it, another version a warning), rebuilds the model by name from the
checkpoint's config, loads its weights and fitted preprocessing, and returns a
:class:`Predictor`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmplug.assembly import MultimodalModel
from mmplug.checkpoint import load_model
from mmplug.data import (
    ManifestDataset,
    columns_for,
    make_loader,
    raise_fatal,
    read_labelled_manifest,
    read_manifest,
)
from mmplug.errors import DataError, MmplugError
from mmplug.evaluation import Evaluation, evaluate_loader
from mmplug.labels import Labels
from mmplug.registry import Registry
from mmplug.rundir import BEST, LAST, RunDir
from mmplug.sections import DataConfig
from mmplug.training import resolve_device


class Predictor:
    """A trained model with its labels, ready to predict.

    Attributes:
        model: the model, in eval mode, on ``device``.
        labels: the task and class names.
        data: the run's ``data`` section (columns, label column, error handling).
    """

    def __init__(
        self, model: MultimodalModel, labels: Labels, data: DataConfig, device: torch.device
    ) -> None:
        self.model = model.to(device).eval()
        self.labels = labels
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
            (see :meth:`Labels.describe`).

        Raises:
            DataError: a value can't be loaded (names the sample and key).
        """
        if isinstance(samples, Mapping):
            samples = [samples]
        loaded = []
        for index, sample in enumerate(samples):
            try:
                loaded.append(self.model.load_sample(sample, root=root))
            except DataError as exc:
                raise DataError(f"sample {index}: {exc}") from exc
        results: list[dict[str, Any]] = []
        for start in range(0, len(loaded), batch_size):
            batch = self.model.preprocess(loaded[start : start + batch_size]).to(self.device)
            results += self._describe(self.model(batch).logits)
        return results

    def _describe(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        predictions = self.model.head.predict(logits.float()).cpu()
        return [self.labels.describe(row) for row in predictions]

    def predict_manifest(
        self, path: str | Path, *, batch_size: int = 32, num_workers: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Predict every row of a manifest, in order: ``{"row": line, **prediction}``.

        A column the manifest lacks is absent for every row. A row that can't be read is an
        error, or with the run's ``data.on_error: skip`` a ``{"row": line, "error": ...}``
        entry, so that every row has an output line.
        """
        manifest = read_manifest(path)
        wanted = columns_for(self.keys, self.data.columns)
        columns = {key: column for key, column in wanted.items() if column in manifest.columns}
        if not columns:
            listed = ", ".join(wanted.values())
            raise DataError(f"{manifest.path}: none of the model's columns ({listed}) is in it")
        dataset = ManifestDataset.from_config(manifest, columns, self.model.modalities, self.data)
        loader = make_loader(
            dataset, self.model, batch_size=batch_size, train=False, num_workers=num_workers
        )
        for loaded in loader:
            raise_fatal(loaded.skipped)
            results: dict[int, dict[str, Any]] = {}
            for skipped in loaded.skipped:
                results[skipped.row] = {"row": skipped.row, "error": skipped.error}
            if loaded.batch is not None:
                with torch.no_grad():  # not around the yield: the caller's code runs there
                    logits = self.model(loaded.batch.to(self.device)).logits
                for index, output in zip(loaded.indices, self._describe(logits), strict=True):
                    line = manifest.lines[index]
                    results[line] = {"row": line, **output}
            yield from (results[line] for line in sorted(results))

    def evaluate(
        self, path: str | Path, *, batch_size: int = 32, num_workers: int = 0
    ) -> Evaluation:
        """Loss, metrics and (for classification) the confusion matrix on a labelled manifest."""
        manifest = read_labelled_manifest(path, self.data.label)
        # A column the manifest lacks is absent in every row, as in predict_manifest.
        columns = columns_for(self.keys, self.data.columns)
        dataset = ManifestDataset.from_config(
            manifest, columns, self.model.modalities, self.data, self.labels
        )
        loader = make_loader(
            dataset, self.model, batch_size=batch_size, train=False, num_workers=num_workers
        )
        return evaluate_loader(self.model, loader, self.device, confusion=True)


def load(
    run_dir: str | Path,
    *,
    checkpoint: str = BEST,
    device: str = "auto",
    registry: Registry | None = None,
) -> Predictor:
    """Load a run directory's checkpoint (``best`` or ``last``) as a :class:`Predictor`.

    Raises:
        MmplugError: not a run directory, no such checkpoint, or a plugin the run used is not
            installed (named, with the ``pip install`` line).
    """
    from mmplug.config import load_config

    if registry is None:
        from mmplug.plugins import default_registry

        registry = default_registry()
    if checkpoint not in (BEST, LAST):
        raise MmplugError(f"checkpoint must be {BEST!r} or {LAST!r}, not {checkpoint!r}")
    run = RunDir.open(run_dir)
    run.check_plugins(registry)
    config = load_config(run.config_data())
    if config.data is None:
        raise MmplugError(f"{run.path / 'config.yaml'} has no data section")
    model = load_model(run.checkpoint(checkpoint), registry=registry)
    return Predictor(model, run.labels(), config.data, resolve_device(device, "device"))


def evaluate(
    run_dir: str | Path,
    data: str | Path,
    *,
    checkpoint: str = BEST,
    device: str = "auto",
    batch_size: int = 32,
    registry: Registry | None = None,
) -> Evaluation:
    """Evaluate a run's checkpoint on the labelled manifest ``data``."""
    predictor = load(run_dir, checkpoint=checkpoint, device=device, registry=registry)
    return predictor.evaluate(data, batch_size=batch_size)
