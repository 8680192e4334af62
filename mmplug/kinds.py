"""The four kinds of component, listed once; hooks, listings, checks and templates derive
from this list.

A kind's hook is ``register_<plural>``: ``register_modalities``, ``register_encoders``,
``register_fusions``, ``register_heads``, called in this order.
"""

from __future__ import annotations

_KINDS: tuple[tuple[str, str], ...] = (
    ("modality", "modalities"),
    ("encoder", "encoders"),
    ("fusion", "fusions"),
    ("head", "heads"),
)

#: The kinds, in the order they are registered and listed.
KINDS: tuple[str, ...] = tuple(kind for kind, _ in _KINDS)
#: kind -> its plural, as messages and hook names use it.
PLURAL: dict[str, str] = dict(_KINDS)
#: hook name -> the kind it registers, in the order the hooks are called.
HOOK_KINDS: dict[str, str] = {f"register_{plural}": kind for kind, plural in _KINDS}
