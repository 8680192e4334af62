"""The project's exceptions.

Every error a user can cause (an unknown name, an invalid config, a broken plugin, a bad
value in a manifest) is an :class:`MmplugError`. The command line turns those into one
clear message and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mmplug.kinds import PLURAL


class MmplugError(Exception):
    """Base class of every error mmplug raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config, located by its dotted path (``model.encoders.text.pooling``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(MmplugError, ValueError):
    """A config that can't be used; lists every problem found, each with its path.

    Args:
        issues: the problems, in the order they were found.
        source: where the config came from (a file path), named in the message.
    """

    def __init__(self, issues: Sequence[ConfigIssue] | str, *, source: str | None = None):
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" in {self.source}" if self.source else ""
        if len(self.issues) == 1 and not (self.source or self.issues[0].path):
            return self.issues[0].message  # e.g. "config file not found: x.yaml"
        if len(self.issues) == 1:
            return f"invalid config{where}: {self.issues[0]}"
        lines = [f"invalid config{where} ({len(self.issues)} errors):"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


class UnknownComponentError(MmplugError, KeyError):
    """No component of that kind has that name. The message suggests close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str], suggestions: Sequence[str]):
        self.kind = kind
        self.name = name
        self.suggestions = list(suggestions)
        known = sorted(known)
        if self.suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            hint = f"known {PLURAL.get(kind, kind + 's')}: {', '.join(known)}"
        else:
            hint = f"no {kind} is registered; is the plugin that provides it installed?"
        super().__init__(f"unknown {kind} {name!r}; {hint}")

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0])


class DuplicateComponentError(MmplugError):
    """A name is ambiguous (two distributions register it) or registered twice by one plugin."""


class PluginLoadError(MmplugError):
    """A plugin failed to import or to register its components.

    Raised only in strict mode (``MMPLUG_STRICT_PLUGINS=1``); otherwise the failure is
    recorded in the plugin report and every other plugin still loads.
    """


class ComponentError(MmplugError):
    """A component failed to build, or broke its interface (wrong type, wrong output shape)."""


class DataError(MmplugError, ValueError):
    """A raw value (a manifest cell, a file) that a modality can't load; names the value."""


class MmplugWarning(UserWarning):
    """Something works but may not do what the user expects (e.g. a plugin version changed)."""


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, 80, 80, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    return short


_SHORT = _short_repr()


def brief(value: Any) -> str:
    """``repr(value)`` bounded in length and depth, for messages: a value from a config or a
    manifest may be huge (an alias bomb, a 5,000-digit number) or deeply nested."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int too long to print (Python refuses past 4,300 digits)
        if isinstance(value, int):
            return f"<an integer of {value.bit_length():,} bits>"
        return f"<a {type(value).__name__} too large to print>"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (``Type`` alone when the message is empty), for a message naming
    what another party's code raised: its ``__str__`` may itself raise, and that must not
    replace the report of the first error."""
    try:
        text = str(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as failure:
        text = f"<str() raised {type(failure).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bounded(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def parse_problem(exc: ValueError) -> str:
    """What a parser's ``ValueError`` means, in words for the user: Python's refusal of an
    integer of more than 4,300 digits advises ``sys.set_int_max_str_digits``, which is no
    advice for a config or a manifest."""
    text = str(exc)
    if "integer string conversion" in text:
        return "a number has more than 4,300 digits"
    return bounded(text)
