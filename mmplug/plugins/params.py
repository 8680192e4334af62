"""The base class of every component's params model.

A params model is a pydantic model describing a component's parameters (types, defaults,
descriptions); a config's params are validated against it before anything is built::

    class CharCNNParams(mmplug.Params):
        dim: int = Field(default=128, ge=1, description="Output size.")

:class:`Params` forbids unknown fields (a typo in a config is an error, not a silently
ignored key) and defers building its validator to first use, which keeps listing plugins
fast: ``mmplug list`` imports every plugin's params models but validates none.
:func:`describe_params` is what ``mmplug info`` shows of a model: name, type as a user writes
it, default, description; it reads the model only, nothing is built or validated.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticUndefined


class Params(BaseModel):
    """Base class of a component's params model: unknown fields are errors; the validator
    is built on first use."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class NoParams(Params):
    """Params model of a component that takes no parameters."""


def describe_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Name, type, default, whether required, and description of each field of ``model``,
    in JSON."""
    rows = []
    for name, field in model.model_fields.items():
        required = field.is_required()
        default = None
        if not required:
            try:
                default = field.get_default(call_default_factory=True)
            except Exception:  # a factory that needs the other fields' values
                default = "<computed from other params>"
            if default is PydanticUndefined:
                default = None
        rows.append(
            {
                "name": name,
                "type": type_name(field.annotation),
                "default": jsonable(default),
                "required": required,
                "description": field.description,
            }
        )
    return rows


def type_name(annotation: Any) -> str:
    """How a user would write the type: ``list[int]``, ``'a' | 'b' | None``.

    Constraints (``PositiveInt`` is ``Annotated[int, Gt(0)]``) are left out; the description
    and validation errors carry them.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) if a is not None else "None" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else str(origin)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it, else its repr."""
    try:
        json.dumps(value, allow_nan=False)  # NaN is not JSON
    except (TypeError, ValueError):
        return repr(value)
    return value
