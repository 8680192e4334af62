"""The ``text`` modality: a string given inline in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmplug import DataError, Modality


class TextModality(Modality):
    """A text is a ``str``, inline in the manifest; the raw object is that string.

    An absent value (a missing key or ``None``) never reaches :meth:`load`: the data pipeline
    treats the sample as lacking text. An empty string is a valid, present text.
    """

    name = "text"

    def load(self, value: Any, *, root: str | Path | None = None) -> str:
        """Return ``value`` itself; it must be a string.

        Args:
            value: the manifest cell.
            root: unused: texts are inline, never paths.

        Raises:
            DataError: ``value`` is not a ``str`` (a number, a list, ``None``, a NaN from a
                spreadsheet); the message names it and its type.
        """
        if isinstance(value, str):
            return str(value)  # a str subclass (numpy.str_) becomes a plain, picklable str
        if value is None:
            raise DataError(
                "text: got None; an absent text is left out of the sample (the data pipeline "
                "skips None values), not loaded"
            )
        raise DataError(f"text: expected a string, got {type(value).__name__}: {value!r:.80}")
