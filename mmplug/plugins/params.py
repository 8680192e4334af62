"""The base class of every component's params model.

A params model is a pydantic model describing a component's parameters (types, defaults,
descriptions); a config's params are validated against it before anything is built::

    class CharCNNParams(mmplug.Params):
        dim: int = Field(default=128, ge=1, description="Output size.")

:class:`Params` forbids unknown fields (a typo in a config is an error, not a silently
ignored key) and defers building its validator to first use, which keeps listing plugins
fast: ``mmplug list`` imports every plugin's params models but validates none.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base class of a component's params model: unknown fields are errors; the validator
    is built on first use."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class NoParams(Params):
    """Params model of a component that takes no parameters."""
