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
from mmplug.model.config import ComponentConfig, Config, ModalityConfig, ModelConfig, issues_from
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
    modalities: dict[str, ResolvedComponent]
    fusion: ResolvedComponent
    head: ResolvedComponent
    modality_dropout: float = 0.0
    unimodal_heads: bool = False

    def to_config(self) -> dict[str, Any]:
        """The fully resolved ``model`` section."""
        return {
            "encoders": {key: enc.to_config() for key, enc in self.encoders.items()},
            "modalities": {key: mod.to_config() for key, mod in self.modalities.items()},
            "fusion": self.fusion.to_config(),
            "head": self.head.to_config(),
            "modality_dropout": self.modality_dropout,
            "unimodal_heads": self.unimodal_heads,
        }

    def distributions(self) -> dict[str, str]:
        """Distribution -> version of every component used, modalities included."""
        components = (*self.encoders.values(), *self.modalities.values(), self.fusion, self.head)
        specs = [c.spec for c in components]
        return {spec.distribution: spec.version for spec in sorted(specs, key=_by_distribution)}


def resolve_component(
    registry: Registry, kind: str, entry: ComponentConfig, path: str, issues: list[ConfigIssue]
) -> ResolvedComponent | None:
    """Resolve one entry, appending its problems to ``issues`` (None if it has any)."""
    spec = look_up(registry, kind, entry, path, issues)
    return None if spec is None else with_params(spec, entry.params, path, issues)


def look_up(
    registry: Registry, kind: str, entry: ComponentConfig, path: str, issues: list[ConfigIssue]
) -> ComponentSpec | None:
    """The spec ``entry`` names; a name that resolves to none goes to ``issues``."""
    try:
        return registry.get(kind, entry.name)
    except (UnknownComponentError, DuplicateComponentError) as exc:
        issues.append(ConfigIssue(f"{path}.name", str(exc)))
        return None


def with_params(
    spec: ComponentSpec, params: dict[str, Any], path: str, issues: list[ConfigIssue]
) -> ResolvedComponent | None:
    """``spec`` with ``params`` validated by its params model; problems go to ``issues``
    (an unknown parameter with a close match), and then the result is None."""
    kind = spec.kind
    found_before = len(issues)
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


def resolve_modality(
    registry: Registry,
    key: str,
    encoder: ComponentSpec,
    entry: ModalityConfig | None,
    issues: list[ConfigIssue],
) -> ResolvedComponent | None:
    """The modality that loads ``key``'s values (the one ``encoder`` consumes), with the
    params ``entry`` gives it (``model.modalities.KEY``); problems go to ``issues``, and
    then the result is None."""
    path = f"model.modalities.{key}"
    consumed = encoder.modality or ""
    try:
        if entry is not None and entry.name is not None:
            spec = registry.get("modality", entry.name)
            if spec.name != consumed:
                issues.append(
                    ConfigIssue(
                        f"{path}.name",
                        f"encoder {encoder.name!r} of key {key!r} consumes modality "
                        f"{consumed!r}, not {spec.name!r} (leave name out: it follows from "
                        "the encoder)",
                    )
                )
                return None
        else:
            spec = modality_of(registry, encoder)
    except (UnknownComponentError, DuplicateComponentError) as exc:
        if entry is not None and entry.name is not None:
            issues.append(ConfigIssue(f"{path}.name", str(exc)))
        else:
            issues.append(
                ConfigIssue(
                    f"model.encoders.{key}.name",
                    f"encoder {encoder.name!r} ({encoder.distribution}) consumes "
                    f"modality {consumed!r}, which can't be used: {exc}",
                )
            )
        return None
    return with_params(spec, entry.params if entry is not None else {}, path, issues)


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
    modalities: dict[str, ResolvedComponent] = {}
    for key in sorted(set(model.modalities) - set(model.encoders)):
        close = difflib.get_close_matches(key, list(model.encoders), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        issues.append(
            ConfigIssue(
                f"model.modalities.{key}",
                f"no encoder has key {key!r}{hint} (keys: {', '.join(model.encoders)})",
            )
        )
    for key in sorted(model.encoders):
        path = f"model.encoders.{key}"
        entry = model.encoders[key]
        spec = look_up(registry, "encoder", entry, path, issues)
        if spec is None:
            continue
        encoder = with_params(spec, entry.params, path, issues)
        if encoder is not None:
            encoders[key] = encoder
        # checked even when the encoder's params are wrong: every problem at once
        modality = resolve_modality(registry, key, spec, model.modalities.get(key), issues)
        if modality is not None:
            modalities[key] = modality
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
