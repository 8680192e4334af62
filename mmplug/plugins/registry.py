"""The component registry: what plugins registered, under which names, from which distribution.

The registry stores *descriptions* of components (:class:`ComponentSpec`), never built objects:
a spec holds a lazy factory, so listing and validating never import torch or a model library.
Plugins fill it through the ``register`` callback their hooks receive (see
:mod:`mmplug.plugins.hookspecs`); :mod:`mmplug.plugins.loading` decides which plugins run.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mmplug.errors import DuplicateComponentError, UnknownComponentError
from mmplug.kinds import KINDS

if TYPE_CHECKING:
    # imported by _check_params(): pydantic is 150 ms that listing from the registry
    # snapshot, which registers nothing, never needs
    from pydantic import BaseModel

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def natural_key(name: str) -> list[int | str]:
    """Sort key reading digit runs as numbers: ``resnet18`` < ``resnet34`` < ``resnet101``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


_FACTORY_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

Factory = Callable[..., Any]


class RegisterFn(Protocol):
    """The ``register`` callback each hook receives."""

    def __call__(
        self,
        name: str,
        factory: Factory | str,
        *,
        params: type[BaseModel] | None = None,
        summary: str | None = None,
        modality: str | None = None,
    ) -> None: ...


def normalize_distribution(name: str) -> str:
    """Normalize a distribution name the way packaging does (``Mmplug_Text`` -> ``mmplug-text``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component: everything known about it without building it.

    Attributes:
        kind: ``modality``, ``encoder``, ``fusion`` or ``head``.
        name: the registered name (``bert``).
        factory: a callable, or a ``"module:attr"`` string imported when first built.
        params: the pydantic model its config params are validated against.
        summary: one line for listings.
        modality: for encoders, the name of the modality they consume.
        distribution: the distribution that registered it (``mmplug-text``).
        version: that distribution's version.
        plugin: the plugin (entry point) that registered it.
    """

    kind: str
    name: str
    factory: Factory | str
    params: type[BaseModel]
    summary: str
    modality: str | None
    distribution: str
    version: str
    plugin: str

    @property
    def qualified_name(self) -> str:
        """``distribution:name``, which always resolves, even when the bare name is ambiguous."""
        return f"{self.distribution}:{self.name}"

    def load_factory(self) -> Factory:
        """Return the factory callable, importing it first if it was given as a string."""
        if not isinstance(self.factory, str):
            return self.factory
        module_name, _, attr_path = self.factory.partition(":")
        obj: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            obj = getattr(obj, attr)
        if not callable(obj):
            raise TypeError(f"{self.factory!r} is not callable")
        return obj  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        """The fields ``mmplug list --json`` prints, exactly these keys."""
        return {
            "kind": self.kind,
            "name": self.name,
            "modality": self.modality,
            "distribution": self.distribution,
            "version": self.version,
            "summary": self.summary,
        }

    def param_rows(self) -> list[dict[str, Any]]:
        """Name, type, default, whether required, and description of each param: what
        ``mmplug info`` shows (:func:`~mmplug.plugins.params.describe_params`)."""
        from mmplug.plugins.params import describe_params

        return describe_params(self.params)


def _default_summary(factory: Factory | str) -> str:
    if isinstance(factory, str):
        return ""  # reading the docstring would import the factory's module
    # The factory's own docstring: inspect.getdoc() would fall back to a base class's
    # (mmplug.Encoder's), which describes every encoder and so none.
    doc = inspect.cleandoc(getattr(factory, "__doc__", None) or "")
    return doc.splitlines()[0] if doc else ""


class Registry:
    """Components by kind and name.

    A bare name registered by two distributions is ambiguous and raises on lookup, naming
    both; ``distribution:name`` always resolves.
    """

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, list[ComponentSpec]]] = {kind: {} for kind in KINDS}

    # -- filling -----------------------------------------------------------------------------

    def register_fn(self, kind: str, *, distribution: str, version: str, plugin: str) -> RegisterFn:
        """Return the ``register`` callback handed to one plugin's hook for one kind."""

        def register(
            name: str,
            factory: Factory | str,
            *,
            params: type[BaseModel] | None = None,
            summary: str | None = None,
            modality: str | None = None,
        ) -> None:
            self.add(
                ComponentSpec(
                    kind=kind,
                    name=_check_name(kind, name),
                    factory=_check_factory(kind, name, factory),
                    params=_check_params(kind, name, params),
                    summary=_default_summary(factory) if summary is None else str(summary),
                    modality=_check_modality(kind, name, modality),
                    distribution=distribution,
                    version=version,
                    plugin=plugin,
                )
            )

        return register

    def add(self, spec: ComponentSpec) -> None:
        """Add a spec; the same distribution registering a name twice is an error."""
        same_name = self._specs[spec.kind].setdefault(spec.name, [])
        for existing in same_name:
            if normalize_distribution(existing.distribution) == normalize_distribution(
                spec.distribution
            ):
                raise DuplicateComponentError(
                    f"{spec.kind} {spec.name!r} is registered twice by {spec.distribution} "
                    f"(plugins {existing.plugin!r} and {spec.plugin!r})"
                )
        same_name.append(spec)

    def remove_plugin(self, plugin: str) -> list[ComponentSpec]:
        """Remove everything one plugin registered (used when it fails half-way)."""
        removed = []
        for by_name in self._specs.values():
            for name in list(by_name):
                kept = [spec for spec in by_name[name] if spec.plugin != plugin]
                removed += [spec for spec in by_name[name] if spec.plugin == plugin]
                if kept:
                    by_name[name] = kept
                else:
                    del by_name[name]
        return removed

    # -- lookup ------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> ComponentSpec:
        """Resolve ``name`` or ``distribution:name`` to one spec.

        Raises:
            UnknownComponentError: nothing of that kind has the name (close matches suggested).
            DuplicateComponentError: a bare name that several distributions register.
        """
        _check_kind(kind)
        by_name = self._specs[kind]
        distribution, _, bare = name.rpartition(":")
        candidates = by_name.get(bare, [])
        if distribution:
            wanted = normalize_distribution(distribution)
            candidates = [c for c in candidates if normalize_distribution(c.distribution) == wanted]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            known = list(by_name)
            pool = (
                [spec.qualified_name for spec in self.components(kind)] if distribution else known
            )
            suggestions = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
            raise UnknownComponentError(kind, name, known, suggestions)
        owners = " and ".join(sorted(f"{c.distribution} {c.version}" for c in candidates))
        choices = ", ".join(sorted(c.qualified_name for c in candidates))
        raise DuplicateComponentError(
            f"{kind} {name!r} is registered by {owners}; say which one: {choices}"
        )

    def find(self, name: str) -> list[ComponentSpec]:
        """Every spec of any kind that ``name`` (bare or qualified) designates."""
        distribution, _, bare = name.rpartition(":")
        found = []
        for kind in KINDS:
            for spec in self._specs[kind].get(bare, []):
                if not distribution or normalize_distribution(
                    spec.distribution
                ) == normalize_distribution(distribution):
                    found.append(spec)
        return found

    def names(self, kind: str) -> list[str]:
        """Sorted bare names of one kind."""
        _check_kind(kind)
        return sorted(self._specs[kind], key=natural_key)

    def components(
        self,
        kind: str | None = None,
        pattern: str | None = None,
        *,
        modality: str | None = None,
    ) -> list[ComponentSpec]:
        """Specs sorted by kind, name (numbers by value: resnet18 before resnet101) and
        distribution, optionally filtered.

        Args:
            kind: only this kind.
            pattern: a glob (``resnet*``) matched against the bare or qualified name.
            modality: only encoders of this modality, and the modality itself.
        """
        kinds = KINDS if kind is None else (_check_kind(kind),)
        found = []
        for each_kind in kinds:
            for name in sorted(self._specs[each_kind], key=natural_key):
                for spec in sorted(self._specs[each_kind][name], key=lambda s: s.distribution):
                    if pattern and not (
                        fnmatch.fnmatchcase(spec.name, pattern)
                        or fnmatch.fnmatchcase(spec.qualified_name, pattern)
                    ):
                        continue
                    if modality is not None and modality not in (spec.modality, _own(spec)):
                        continue
                    found.append(spec)
        return found

    def __len__(self) -> int:
        return sum(len(specs) for by_name in self._specs.values() for specs in by_name.values())


def _own(spec: ComponentSpec) -> str | None:
    """A modality spec matches ``--modality`` of its own name."""
    return spec.name if spec.kind == "modality" else None


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownComponentError(
            "kind", kind, KINDS, difflib.get_close_matches(kind, KINDS, n=1)
        )
    return kind


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use lowercase letters, digits, '-' or '_' "
            "(e.g. 'resnet50', 'cross-attention')"
        )
    return name


def _check_factory(kind: str, name: str, factory: object) -> Factory | str:
    if isinstance(factory, str):
        if not _FACTORY_PATH.match(factory):
            raise ValueError(
                f"{kind} {name!r}: factory {factory!r} is not a 'module:attribute' path"
            )
        return factory
    if not callable(factory):
        raise TypeError(
            f"{kind} {name!r}: factory must be callable or 'module:attr', got {factory!r}"
        )
    return factory


def _check_params(kind: str, name: str, params: object) -> type[BaseModel]:
    from pydantic import BaseModel

    from mmplug.plugins.params import NoParams

    if params is None:
        return NoParams
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(
            f"{kind} {name!r}: params must be a pydantic BaseModel subclass, got {params!r}"
        )
    if "name" in params.model_fields:
        raise ValueError(
            f"{kind} {name!r}: params may not have a field called 'name' (the config uses it)"
        )
    return params


def _check_modality(kind: str, name: str, modality: object) -> str | None:
    if kind != "encoder":
        if modality is not None:
            raise ValueError(f"{kind} {name!r}: only encoders take modality=")
        return None
    if not isinstance(modality, str) or not NAME_PATTERN.match(modality):
        raise ValueError(
            f"encoder {name!r}: modality= must name the modality it consumes, got {modality!r}"
        )
    return modality
