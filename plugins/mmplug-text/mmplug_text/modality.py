"""The ``text`` modality: a string given inline in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmplug import DataError, Modality, brief
from mmplug_text import DEFAULT_MAX_CHARACTERS


class TextModality(Modality):
    """A text is a ``str``, inline in the manifest; the raw object is that string.

    An absent value (a missing key or ``None``) never reaches :meth:`load`: the data pipeline
    treats the sample as lacking text. An empty string is a valid, present text.
    """

    name = "text"

    def __init__(self, max_characters: int = DEFAULT_MAX_CHARACTERS):
        if max_characters < 1:
            raise ValueError(f"max_characters must be at least 1, got {max_characters}")
        self.max_characters = max_characters

    def load(self, value: Any, *, root: str | Path | None = None) -> str:
        """Return ``value`` itself; it must be a string.

        Args:
            value: the manifest cell.
            root: unused: texts are inline, never paths.

        Raises:
            DataError: ``value`` is not a ``str`` (a number, a list, ``None``, a NaN from a
                spreadsheet), or not valid Unicode (a lone surrogate, from JSON's
                ``"\\ud800"`` or a command-line byte that is not UTF-8); the message names
                it.
        """
        if isinstance(value, str):
            if len(value) > self.max_characters:
                raise DataError(
                    f"text: {len(value):,} characters, over the limit of "
                    f"{self.max_characters:,} (max_characters): {value[:40]!r}..."
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # "\ud800" is valid JSON, and not text
                raise DataError(
                    f"text: not valid Unicode: a lone surrogate {value[exc.start]!r} at "
                    f"character {exc.start} (text decoded with the wrong encoding?)"
                ) from None
            return str(value)  # a str subclass (numpy.str_) becomes a plain, picklable str
        if value is None:
            raise DataError(
                "text: got None; an absent text is left out of the sample (the data pipeline "
                "skips None values), not loaded"
            )
        raise DataError(f"text: expected a string, got {type(value).__name__}: {brief(value)}")
