"""Manifests: JSONL, CSV or TSV files with one example per row.

A manifest gives one value per column; a config's ``data.columns`` says which column each
modality key reads, and ``data.label`` which column holds the target. Relative paths in
cells resolve against the manifest's folder. Errors name the file and the row's line number
as an editor shows it.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmplug.errors import DataError, brief, parse_problem
from mmplug.model.config import unique_keys
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import Task, is_missing

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}

#: What a column that a manifest lacks means: an error (a training manifest: most likely a
#: typo), or that key absent in every row (a test split or new data without that modality).
MissingColumns = Literal["error", "absent"]


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
        raise DataError(f"{path}: not UTF-8 text ({_undecodable(path)})") from exc
    known = ", ".join((*JSONL_SUFFIXES, *CSV_DELIMITERS))
    raise DataError(f"{path}: unknown manifest format {suffix!r} (use {known})")


def _undecodable(path: Path) -> str:
    """Where the first byte that is not UTF-8 sits in the whole file (a decoding error
    raised while reading counts from the start of the chunk being decoded)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{exc.reason} at byte {exc.start}, line {line}"
    return "the file changed while it was read"


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
                row = json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {number}: invalid JSON at column {exc.colno}: {exc.msg}"
                ) from None
            except RecursionError:
                raise DataError(f"{path} line {number}: JSON nested too deeply") from None
            except ValueError as exc:  # a key given twice; an integer of 4,300+ digits
                raise DataError(f"{path} line {number}: {parse_problem(exc)}") from None
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
            header = reader.fieldnames or []
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:
                raise DataError(
                    f"{path} line 1: the header names column {', '.join(map(brief, twice))} "
                    "more than once; a row's value would be taken from one of them silently"
                )
            for row in reader:
                if "\0extra" in row:
                    raise DataError(
                        f"{path} line {reader.line_num}: {len(reader.fieldnames or []) + 1}+ "
                        f"cells, but the header has {len(reader.fieldnames or [])}"
                    )
                rows.append({k: (v if v not in ("", None) else None) for k, v in row.items()})
                # the row's first line, as an editor shows it: line_num is where it ends, and
                # a quoted cell may run over several lines
                inside = sum(v.count("\n") for v in row.values() if isinstance(v, str))
                lines.append(reader.line_num - inside)
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: {exc}") from None
    return Manifest(path, rows, lines, list(reader.fieldnames or []))


def columns_in(
    manifest: Manifest,
    keys: Sequence[str],
    configured: Mapping[str, str],
    *,
    missing: MissingColumns,
) -> tuple[dict[str, str], list[str]]:
    """Which column each modality key reads in ``manifest``, under a missing-column policy.

    A key reads the column ``configured`` gives it (``data.columns``), or its own name.

    Args:
        missing: ``error``: every key's column must exist; ``absent``: a key whose column is
            missing is absent in every row.

    Returns:
        Key -> column for the columns the manifest has, and the columns it lacks.

    Raises:
        DataError: a column is missing under ``error`` (with close matches), or the manifest
            has none of the keys' columns at all.
    """
    wanted = {key: configured.get(key, key) for key in sorted(keys)}
    if missing == "error":
        for key, column in wanted.items():
            manifest.require_column(column, f"read by model key {key!r}; see data.columns")
    found = {key: column for key, column in wanted.items() if column in manifest.columns}
    if not found:
        listed = ", ".join(wanted.values())
        raise DataError(
            f"{manifest.path}: none of the model's columns ({listed}) is in it (columns: "
            f"{', '.join(manifest.columns) or 'none'}); see data.columns"
        )
    return found, [column for column in wanted.values() if column not in manifest.columns]


def read_labels(manifest: Manifest, data: DataConfig, task: type[Task]) -> Task:
    """The label space of a training manifest: one pass over its label column.

    Missing labels are passed over here (loading their rows reports them).

    Raises:
        DataError: a cell is not a label of ``task``, naming its row; with
            ``data.on_error: skip`` the row is passed over (loading it will skip it again).
    """
    names: list[str] = []
    for index, row in enumerate(manifest.rows):
        cell = row.get(data.label)
        if is_missing(cell):
            continue
        try:
            names += task.label_names(cell, data.label_separator)
        except DataError as exc:
            if data.on_error == "skip":
                continue
            raise DataError(f"{manifest.where(index, data.label)}: {exc}") from exc
    return task.from_labels(names, classes=data.classes, separator=data.label_separator)
