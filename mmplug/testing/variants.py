"""The variants the kit makes by itself: one per other value of each mode param.

Bugs hide in the modes a component is not built with by default: a ``pooling: mean`` that
multiplies NaN padding by zero passes every check under the default ``max``. So each param
whose values can all be listed (a *mode*: a ``Literal``, a ``bool``, an ``Enum``, any of them
optional) is tried with each of its other values, one param changed at a time on top of the
kit's ``params`` for the component: a component gets as many variants as its modes have
other values, never their product. The variant ``{"pooling": "mean"}`` of fusion ``pool``
is checked as ``fusion:pool[pooling=mean]:<check>``, and its failures say ``fusion 'pool'
(acme 1.0) with pooling=mean``.

Not made:

- a value the params model refuses on top of the kit's params (a validator saying that
  ``size`` and ``from_scratch: false`` don't go together): no config reaches it;
- a variant that validates to params already checked (the defaults, a variant given by hand,
  an earlier generated one);
- ``freeze`` of an encoder: the ``freeze`` check sets it, and nothing can train a frozen
  encoder.

An author opts out of a variant that can't be checked (it needs the network, it builds a
billion parameters) with ``Conformance(skip_variants={"bert": {"size": "why"}})``: a param
name opts out of each of its values, ``"size=bert-base"`` (as the test id writes it) of one.
Its checks are then skipped with that reason, and an opt-out that matches no variant the kit
makes is an error, so that it can't outlive the param it was written for.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mmplug.plugins.registry import ComponentSpec

#: kind -> params that a check of the kit sets itself, and which are therefore never varied.
SET_BY_A_CHECK: dict[str, frozenset[str]] = {"encoder": frozenset({"freeze"})}


def mode_values(annotation: Any) -> tuple[Any, ...] | None:
    """Every value a field annotated so can take, if they can all be listed.

    Args:
        annotation: a params model field's annotation.

    Returns:
        a ``Literal``'s values, ``(False, True)`` for ``bool``, an ``Enum``'s members, and
        ``None`` too for an optional one (``Literal["a", "b"] | None``); None when the values
        can't all be listed (``int``, ``str | None``, ``int | Literal["auto"]``).
    """
    if annotation is bool:
        return (False, True)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin is typing.Annotated:
        return mode_values(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        values: list[Any] = []
        for arm in typing.get_args(annotation):
            listed = (None,) if arm is type(None) else mode_values(arm)
            if listed is None:
                return None
            values += [v for v in listed if v not in values]
        return tuple(values)
    return None


def generated_variants(
    spec: ComponentSpec, params: Mapping[str, Any], given: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One variant ``{param: value}`` per other value of each mode param of ``spec``.

    Args:
        spec: the component.
        params: the kit's params for it, which each variant goes on top of.
        given: the variants given by hand; a generated one that validates to the same params
            as one of them (or as ``params`` alone) is left out.

    Returns:
        the variants, param by param in the params model's order, each param's values in
        their declared order. Nothing when ``params`` itself does not validate: the
        defaults' checks say why.
    """
    model = spec.params
    base = _validate(model, params)
    if base is None:
        return []
    seen = [base, *filter(None, (_validate(model, {**params, **v}) for v in given))]
    set_by_a_check = SET_BY_A_CHECK.get(spec.kind, frozenset())
    found = []
    for name, info in model.model_fields.items():
        values = mode_values(info.annotation)
        if values is None or name in set_by_a_check:
            continue
        for value in values:
            validated = _validate(model, {**params, name: value})
            if validated is None or validated in seen:  # refused, or params already checked
                continue
            seen.append(validated)
            found.append({name: value})
    return found


def _validate(model: type[BaseModel], values: Mapping[str, Any]) -> BaseModel | None:
    try:
        return model.model_validate(dict(values))
    except ValueError:  # pydantic's ValidationError
        return None


class OptOuts:
    """``Conformance(skip_variants=...)``, and which of its entries opted out of something.

    Args:
        table: component name (bare or ``distribution:name``) -> param name or one variant's
            label (``size=bert-base``) -> why the kit does not check it.
    """

    def __init__(self, table: Mapping[str, Mapping[str, str]]) -> None:
        self.table = table
        self._used: set[tuple[str, str]] = set()
        self._made: dict[str, list[str]] = {}  # component key -> labels of its variants

    def reason(self, spec: ComponentSpec, variant: Mapping[str, Any]) -> str | None:
        """Why the generated ``variant`` of ``spec`` is not checked; None when it is."""
        component = next((k for k in (spec.qualified_name, spec.name) if k in self.table), None)
        if component is None:
            return None
        [param] = variant
        named = label(variant)
        self._made.setdefault(component, []).append(named)
        entries = self.table[component]
        entry = named if named in entries else param if param in entries else None
        if entry is None:
            return None
        self._used.add((component, entry))
        return entries[entry]

    def check_all_used(self, specs: Sequence[ComponentSpec]) -> None:
        """Raise ``LookupError`` naming the first entry that opted out of no variant: a param
        renamed or gone, a value no longer offered, a component no longer registered."""
        import difflib

        names = {key for spec in specs for key in (spec.name, spec.qualified_name)}
        for component, entries in self.table.items():
            if component not in names:
                close = difflib.get_close_matches(component, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise LookupError(
                    f"skip_variants names {component!r}, which is no component checked here{hint}"
                )
            for entry in entries:
                if (component, entry) not in self._used:
                    made = ", ".join(self._made.get(component, [])) or "none"
                    raise LookupError(
                        f"skip_variants[{component!r}] opts out of {entry!r}, which is no "
                        f"variant the kit makes for {component!r} (it makes: {made}); remove "
                        "the entry, or name a param or a variant as its test id writes it"
                    )


def label(variant: Mapping[str, Any]) -> str:
    """``pooling=mean,dim=null,hidden_dims=[6]``: a variant as test ids and failures show it."""
    return ",".join(f"{name}={show(value)}" for name, value in variant.items())


def show(value: Any) -> str:
    """A param value as JSON writes it, but a word without quotes: ``mean``, ``bert-tiny``,
    ``"a b"``, ``"null"`` (the string), ``null``."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str) and _WORD.fullmatch(value) and value not in _JSON_WORDS:
        return value
    return json.dumps(value, default=repr)


_WORD = re.compile(r"[A-Za-z_][\w.-]*")
_JSON_WORDS = ("null", "true", "false")
