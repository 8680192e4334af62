"""The ``tabular`` modality: one row of numeric feature columns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmplug import DataError, Modality
from torch import Tensor

#: Cells read as a missing value.
MISSING = (None, "", "na", "nan", "null")


class TabularModality(Modality):
    """A row of numbers -> a float32 tensor ``[F]``, NaN where a value is missing.

    Accepted values: a list of numbers, a comma-separated string (``"1.5,,3"``: the blank is
    missing), or a mapping of column name to number, read in sorted column order so that rows
    written as dicts line up whatever their key order.
    """

    name = "tabular"

    def load(self, value: Any, *, root: str | Path | None = None) -> Tensor:
        if isinstance(value, Tensor):
            value = value.tolist()
        if isinstance(value, Mapping):
            cells = [value[key] for key in sorted(value)]
        elif isinstance(value, str):
            cells = [cell.strip() for cell in value.split(",")]
        elif isinstance(value, list | tuple):
            cells = list(value)
        else:
            raise DataError(f"tabular: expected a list, mapping or 'a,b,c' string, got {value!r}")
        numbers = [self._number(cell, value) for cell in cells]
        if not numbers:
            raise DataError(f"tabular: {value!r} has no columns")
        return torch.tensor(numbers, dtype=torch.float32)

    @staticmethod
    def _number(cell: Any, row: Any) -> float:
        if cell is None or (isinstance(cell, str) and cell.lower() in MISSING):
            return math.nan
        if isinstance(cell, bool):
            return float(cell)
        try:
            number = float(cell)
        except (TypeError, ValueError) as exc:
            raise DataError(f"tabular: {cell!r} in {row!r} is not a number") from exc
        if math.isinf(number):
            raise DataError(f"tabular: {cell!r} in {row!r} is infinite")
        return number
