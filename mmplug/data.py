"""Manifests and the data pipeline: rows -> loaded samples -> preprocessed batches.

A manifest is a JSONL file (one object per line) or a CSV/TSV file with a header. Each row
gives one value per column; the config's ``data.columns`` says which column each modality key
reads. Relative paths in cells resolve against the manifest's folder.

Loading (``Modality.load``) and preprocessing (``Encoder.preprocess``, batched) run in
``DataLoader`` worker processes when ``data.num_workers`` > 0. A row that can't be loaded
raises a :class:`DataError` naming the manifest, row, column and value, or, with
``on_error="skip"``, travels with the batch as a :class:`Skipped` record so that the run can
count and list it.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmplug.assembly import Batch, MultimodalModel
from mmplug.errors import DataError
from mmplug.interfaces import Modality
from mmplug.labels import Labels
from mmplug.sections import DataConfig

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Manifest:
    """A manifest read into memory.

    Attributes:
        path: the file.
        rows: one dict per data row; empty cells are None.
        lines: each row's line number in the file (1-based), as an editor shows it.
        columns: every column name (CSV header, or the keys found in any JSONL row).
    """

    path: Path
    rows: list[dict[str, Any]]
    lines: list[int]
    columns: list[str]

    @property
    def root(self) -> Path:
        """The folder relative paths in cells resolve against."""
        return self.path.parent

    def where(self, index: int, column: str | None = None) -> str:
        """``train.jsonl row 12, column 'image'``: how errors name a cell."""
        text = f"{self.path} row {self.lines[index]}"
        return f"{text}, column {column!r}" if column else text

    def require_rows(self) -> None:
        """Raise a :class:`DataError` if the manifest has no data row."""
        if not self.rows:
            raise DataError(f"{self.path} has no rows")

    def require_column(self, column: str, what: str) -> None:
        """Raise a :class:`DataError` unless ``column`` exists; ``what`` says who wants it."""
        if column in self.columns:
            return
        close = difflib.get_close_matches(column, self.columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"{self.path}: no column {column!r} ({what}){hint} "
            f"(columns: {', '.join(self.columns) or 'none'})"
        )


def read_manifest(path: str | Path) -> Manifest:
    """Read a JSONL, CSV or TSV manifest (by suffix).

    Raises:
        DataError: the file is missing, has an unknown suffix, or a line can't be parsed
            (named by line number).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in JSONL_SUFFIXES:
            return _read_jsonl(path)
        if suffix in CSV_DELIMITERS:
            return _read_csv(path, CSV_DELIMITERS[suffix])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    known = ", ".join((*JSONL_SUFFIXES, *CSV_DELIMITERS))
    raise DataError(f"{path}: unknown manifest format {suffix!r} (use {known})")


def read_labelled_manifest(path: str | Path, label: str) -> Manifest:
    """Read a manifest that must have rows and the label column ``label``."""
    manifest = read_manifest(path)
    manifest.require_rows()
    manifest.require_column(label, "the label column, data.label")
    return manifest


def _read_jsonl(path: Path) -> Manifest:
    rows, lines, columns = [], [], {}
    # utf-8-sig: a byte-order mark (as some editors and Excel write) is not part of line 1
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {number}: invalid JSON at column {exc.colno}: {exc.msg}"
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path} line {number}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
            lines.append(number)
            columns.update(dict.fromkeys(row))
    return Manifest(path, rows, lines, list(columns))


def _read_csv(path: Path, delimiter: str) -> Manifest:
    rows, lines = [], []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, restkey="\0extra")
        try:
            for row in reader:
                if "\0extra" in row:
                    raise DataError(
                        f"{path} line {reader.line_num}: {len(reader.fieldnames or []) + 1}+ "
                        f"cells, but the header has {len(reader.fieldnames or [])}"
                    )
                rows.append({k: (v if v not in ("", None) else None) for k, v in row.items()})
                lines.append(reader.line_num)
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: {exc}") from None
    return Manifest(path, rows, lines, list(reader.fieldnames or []))


# -- examples and batches ----------------------------------------------------------------------


@dataclass
class Example:
    """One loaded row: raw values per present key, and its target when labelled."""

    index: int
    values: dict[str, Any]
    target: Tensor | None


@dataclass
class Skipped:
    """A row that could not be read, and why.

    Loader workers return this instead of raising, so that the error reaches the main process
    as its own message (a worker's exception arrives wrapped in the worker's traceback).
    ``fatal`` rows (``on_error="raise"``) are raised there by :func:`raise_fatal`; the others
    are left out, counted and listed.
    """

    manifest: str
    row: int
    error: str
    fatal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "row": self.row, "error": self.error}


def raise_fatal(skipped: Sequence[Skipped]) -> None:
    """Raise the first row error that ``on_error="raise"`` makes fatal."""
    for row in skipped:
        if row.fatal:
            raise DataError(row.error)


@dataclass
class LoadedBatch:
    """What the loader yields: the model's batch plus bookkeeping.

    Attributes:
        batch: preprocessed inputs (None when every row of it was skipped).
        targets: stacked targets, or None for unlabelled data.
        indices: the manifest row index (0-based) of each sample of ``batch``.
        skipped: rows of this batch that were left out.
    """

    batch: Batch | None
    targets: Tensor | None
    indices: list[int]
    skipped: list[Skipped] = field(default_factory=list)


class ManifestDataset(Dataset[Example | Skipped]):
    """The rows of a manifest, loaded with each key's modality.

    Args:
        manifest: the rows.
        columns: modality key -> the column it reads.
        modalities: modality key -> the :class:`Modality` that loads its values.
        labels: how to read the label column; None for unlabelled data (prediction).
        label_column: the label's column.
        require_all: a missing value is an error instead of an absent modality.
        on_error: ``"raise"`` or ``"skip"``.
    """

    def __init__(
        self,
        manifest: Manifest,
        columns: Mapping[str, str],
        modalities: Mapping[str, Modality],
        *,
        labels: Labels | None = None,
        label_column: str = "label",
        require_all: bool = False,
        on_error: str = "raise",
    ) -> None:
        self.manifest = manifest
        self.columns = dict(sorted(columns.items()))
        self.modalities = dict(modalities)
        self.labels = labels
        self.label_column = label_column
        self.require_all = require_all
        self.on_error = on_error

    @classmethod
    def from_config(
        cls,
        manifest: Manifest,
        columns: Mapping[str, str],
        modalities: Mapping[str, Modality],
        data: DataConfig,
        labels: Labels | None = None,
    ) -> ManifestDataset:
        """A dataset reading labels and handling rows as a config's ``data`` section says."""
        return cls(
            manifest,
            columns,
            modalities,
            labels=labels,
            label_column=data.label,
            require_all=data.require_all,
            on_error=data.on_error,
        )

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def __getitem__(self, index: int) -> Example | Skipped:
        try:
            return self.load(index)
        except DataError as exc:
            fatal = self.on_error != "skip"
            return Skipped(str(self.manifest.path), self.manifest.lines[index], str(exc), fatal)

    def load(self, index: int) -> Example:
        """Load row ``index``; a problem is a :class:`DataError` naming the row and column."""
        row = self.manifest.rows[index]
        values = {}
        for key, column in self.columns.items():
            value = row.get(column)
            if value is None:
                if self.require_all:
                    raise DataError(
                        f"{self.manifest.where(index, column)}: no value, and data.require_all "
                        "is set"
                    )
                continue
            try:
                values[key] = self.modalities[key].load(value, root=self.manifest.root)
            except DataError as exc:
                raise DataError(f"{self.manifest.where(index, column)}: {exc}") from exc
        target = None
        if self.labels is not None:
            try:
                target = self.labels.encode(row.get(self.label_column))
            except DataError as exc:
                where = self.manifest.where(index, self.label_column)
                raise DataError(f"{where}: {exc}") from exc
        return Example(index, values, target)


class Collate:
    """Turns a list of :class:`Example`/:class:`Skipped` into a :class:`LoadedBatch`.

    Runs in the loader's workers: the model's encoders preprocess there (batched), which the
    interface allows because ``preprocess`` never depends on the module's device.
    """

    def __init__(self, model: MultimodalModel, *, train: bool) -> None:
        self.model = model
        self.train = train

    def __call__(self, items: Sequence[Example | Skipped]) -> LoadedBatch:
        examples = [item for item in items if isinstance(item, Example)]
        skipped = [item for item in items if isinstance(item, Skipped)]
        indices = [example.index for example in examples]
        if not examples:
            return LoadedBatch(None, None, [], skipped)
        batch = self.model.preprocess([e.values for e in examples], train=self.train)
        targets = None
        if examples[0].target is not None:
            targets = torch.stack([e.target for e in examples if e.target is not None])
        return LoadedBatch(batch, targets, indices, skipped)


def _worker_init(worker_id: int) -> None:
    # Each worker would otherwise start as many threads as there are cores.
    torch.set_num_threads(1)


def make_loader(
    dataset: ManifestDataset,
    model: MultimodalModel,
    *,
    batch_size: int,
    train: bool,
    num_workers: int,
    seed: int = 0,
) -> DataLoader[Example | Skipped]:
    """A loader over ``dataset``, shuffled when ``train`` (in an order fixed by ``seed``).

    Workers are started anew each epoch (not persistent), seeded from the loader's
    generator: an epoch's random choices depend only on ``seed``, so a resumed run replays
    exactly what an uninterrupted one would have done.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        collate_fn=Collate(model, train=train),
        generator=generator,
        worker_init_fn=_worker_init if num_workers else None,
    )


def columns_for(keys: Sequence[str], configured: Mapping[str, str]) -> dict[str, str]:
    """Modality key -> column: the configured one, or the key's own name."""
    return {key: configured.get(key, key) for key in keys}
