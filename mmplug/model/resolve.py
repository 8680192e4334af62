"""Resolving a config against the registry: every name looked up, every params validated.

:func:`resolve_model` turns the ``model`` section of a :class:`~mmplug.model.config.Config`
into a :class:`ResolvedModel`: each component matched to its registered spec, its params
validated by the params model its plugin registered (defaults filled in). Every problem is
reported at once, with its path, as one :class:`ConfigError`. Nothing is built here, and
nothing here imports torch: ``mmplug validate`` runs this and stops.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mmplug.errors import ConfigError, ConfigIssue, DuplicateComponentError, UnknownComponentError
from mmplug.model.config import ComponentConfig, Config, ModelConfig, issues_from
from mmplug.plugins.registry import ComponentSpec, Registry


@dataclass(frozen=True)
class ResolvedComponent:
    """A config entry matched to its registered spec, with params validated.

    Attributes:
        path: where it sits in the config (``model.encoders.text``).
        spec: the registered component.
        params: an instance of ``spec.params``, defaults filled in.
    """

    path: str
    spec: ComponentSpec
    params: BaseModel

    def kwargs(self) -> dict[str, Any]:
        """The params as factory keyword arguments (validated values, nested models kept)."""
        return dict(self.params)

    def to_config(self) -> dict[str, Any]:
        """``{name, **params}`` with every default written out."""
        return {"name": self.spec.qualified_name, **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class ResolvedModel:
    """A model config with every name resolved and every param validated."""

    encoders: dict[str, ResolvedComponent]
    modalities: dict[str, ComponentSpec]
    fusion: ResolvedComponent
    head: ResolvedComponent
    modality_dropout: float = 0.0
    unimodal_heads: bool = False

    def to_config(self) -> dict[str, Any]:
        """The fully resolved ``model`` section."""
        return {
            "encoders": {key: enc.to_config() for key, enc in self.encoders.items()},
            "fusion": self.fusion.to_config(),
            "head": self.head.to_config(),
            "modality_dropout": self.modality_dropout,
            "unimodal_heads": self.unimodal_heads,
        }

    def distributions(self) -> dict[str, str]:
        """Distribution -> version of every component used, modalities included."""
        specs = [c.spec for c in (*self.encoders.values(), self.fusion, self.head)]
        specs += self.modalities.values()
        return {spec.distribution: spec.version for spec in sorted(specs, key=_by_distribution)}


def resolve_component(
    registry: Registry, kind: str, entry: ComponentConfig, path: str, issues: list[ConfigIssue]
) -> ResolvedComponent | None:
    """Resolve one entry, appending its problems to ``issues`` (None if it has any)."""
    found_before = len(issues)
    try:
        spec = registry.get(kind, entry.name)
    except (UnknownComponentError, DuplicateComponentError) as exc:
        issues.append(ConfigIssue(f"{path}.name", str(exc)))
        return None
    params = entry.params
    known = _param_names(spec.params)
    if spec.params.model_config.get("extra") != "allow":
        for unknown in sorted(set(params) - known):
            close = difflib.get_close_matches(unknown, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            choices = ", ".join(sorted(known)) or "none"
            issues.append(
                ConfigIssue(
                    f"{path}.{unknown}",
                    f"unknown parameter of {kind} {spec.name!r}{hint} (parameters: {choices})",
                )
            )
        params = {k: v for k, v in params.items() if k in known}
    try:
        validated = spec.params.model_validate(params)
    except ValidationError as exc:
        issues.extend(issues_from(exc, prefix=path))
        return None
    if len(issues) > found_before:
        return None
    return ResolvedComponent(path, spec, validated)


def _param_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if f.alias}
    return names


def modality_of(registry: Registry, encoder: ComponentSpec) -> ComponentSpec:
    """The modality an encoder consumes; when several distributions register that name, the
    one from the encoder's own distribution wins (it is the one the encoder was written for).
    """
    name = encoder.modality or ""
    try:
        return registry.get("modality", name)
    except DuplicateComponentError:
        try:
            return registry.get("modality", f"{encoder.distribution}:{name}")
        except UnknownComponentError:
            pass
        raise


def resolve_model(
    config: Config | ModelConfig, registry: Registry, *, source: str | None = None
) -> ResolvedModel:
    """Resolve every name of the model section and validate every component's params.

    Raises:
        ConfigError: all problems found, each with its path.
    """
    model = config.model if isinstance(config, Config) else config
    issues: list[ConfigIssue] = []
    encoders: dict[str, ResolvedComponent] = {}
    modalities: dict[str, ComponentSpec] = {}
    for key in sorted(model.encoders):
        path = f"model.encoders.{key}"
        resolved = resolve_component(registry, "encoder", model.encoders[key], path, issues)
        if resolved is None:
            continue
        encoders[key] = resolved
        modality_name = resolved.spec.modality or ""
        try:
            modalities[key] = modality_of(registry, resolved.spec)
        except (UnknownComponentError, DuplicateComponentError) as exc:
            issues.append(
                ConfigIssue(
                    f"{path}.name",
                    f"encoder {resolved.spec.name!r} ({resolved.spec.distribution}) consumes "
                    f"modality {modality_name!r}, which can't be used: {exc}",
                )
            )
    fusion = resolve_component(registry, "fusion", model.fusion, "model.fusion", issues)
    head = resolve_component(registry, "head", model.head, "model.head", issues)
    if issues:
        raise ConfigError(issues, source=source)
    assert fusion is not None and head is not None  # no issues means both resolved
    return ResolvedModel(
        encoders=encoders,
        modalities=modalities,
        fusion=fusion,
        head=head,
        modality_dropout=model.modality_dropout,
        unimodal_heads=(
            len(model.encoders) > 1 if model.unimodal_heads is None else model.unimodal_heads
        ),
    )


def _by_distribution(spec: ComponentSpec) -> str:
    return spec.distribution
