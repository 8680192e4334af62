"""How ``mmplug info`` shows a component's params: name, type as a user writes it, default,
description. Reads the params model only; nothing is built or validated."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from mmplug.plugins.registry import ComponentSpec


def param_rows(spec: ComponentSpec) -> list[dict[str, Any]]:
    """Field, type, default and description of each param of a component."""
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in spec.params.model_fields.items():
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
