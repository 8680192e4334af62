"""Config-by-name assembly: from a config to a :class:`~mmplug.model.multimodal.MultimodalModel`.

Every component is built through its registered factory with its validated params, plus what
assembly wires in and a config can't know: each encoder's ``output_dim`` becomes the
fusion's ``input_dims``, the fusion's ``output_dim`` the head's ``input_dim``. With unimodal
heads, the head is also built once per key on that encoder's ``output_dim``; a fusion that
combines outputs (``late``) gets those heads' ``output_dim`` instead, and has no fused head
after it. A factory that
fails, or returns something that breaks its interface, is a :class:`ComponentError` naming
the config path, the component and its distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from mmplug.errors import ComponentError, ConfigError, ConfigIssue, MmplugError
from mmplug.model.config import Config, ConfigSource, load_config
from mmplug.model.interfaces import INTERFACES, Encoder, Fusion, Head, Modality
from mmplug.model.keys import reserved_key_message
from mmplug.model.multimodal import MultimodalModel, combines_outputs
from mmplug.model.resolve import ResolvedComponent, resolve_model
from mmplug.plugins.registry import ComponentSpec, Registry

T = TypeVar("T")


def build_component(component: ResolvedComponent, interface: type[T], **wiring: Any) -> T:
    """Call a component's factory with its validated params plus what assembly wires in.

    Raises:
        ComponentError: the factory failed (a bug, or a plugin's own error without its
            context) or returned something that is not an ``interface``.
    """
    spec = component.spec
    where = f"{component.path}: {spec.kind} {spec.name!r} from {spec.distribution} {spec.version}"
    try:
        factory = spec.load_factory()
    except Exception as exc:
        raise ComponentError(f"{where}: can't import its factory {spec.factory!r}: {exc}") from exc
    try:
        built = factory(**wiring, **component.kwargs())
    except Exception as exc:
        detail = str(exc) if isinstance(exc, MmplugError) else f"{type(exc).__name__}: {exc}"
        raise ComponentError(f"{where} failed to build: {detail}") from exc
    if not isinstance(built, interface):
        raise ComponentError(
            f"{where}: its factory returned {type(built).__name__}, not a {interface.__name__}"
        )
    return built


def interface_of(spec: ComponentSpec) -> type:
    """The interface a component of ``spec``'s kind implements (``Encoder`` for an encoder)."""
    return INTERFACES[spec.kind]


def _output_dim(component: ResolvedComponent, built: nn.Module) -> int:
    """A built component's ``output_dim``, which must be a positive int."""
    value = getattr(built, "output_dim", None)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        spec = component.spec
        raise ComponentError(
            f"{component.path}: {spec.kind} {spec.name!r} from {spec.distribution} "
            f"{spec.version} has output_dim {value!r}, not a positive int"
        )
    return value


def build_modalities(modalities: Mapping[str, ResolvedComponent]) -> dict[str, Modality]:
    """Build one :class:`Modality` per distinct modality and params, shared by the keys that
    use the same."""
    built: dict[str, Modality] = {}
    by_key = {}
    for key, component in sorted(modalities.items()):
        params = component.params.model_dump_json()
        same = f"{component.spec.qualified_name} {params}"
        if same not in built:
            built[same] = build_component(component, Modality)
        by_key[key] = built[same]
    return by_key


def build_model(
    config: ConfigSource | Config,
    registry: Registry,
    *,
    overrides: Sequence[str] = (),
) -> MultimodalModel:
    """Build a model from a config: a file path, a dict or a :class:`Config`.

    Args:
        config: the config; its ``model`` section is used.
        registry: where names are looked up.
        overrides: ``dotted.key=value`` strings applied first.

    Raises:
        ConfigError: every problem with names and params, with paths.
        ComponentError: a component failed to build or broke its interface.
    """
    source = str(config) if isinstance(config, str | Path) else None
    resolved = resolve_model(load_config(config, overrides), registry, source=source)
    reserved = [key for key in resolved.encoders if hasattr(nn.ModuleDict, key)]
    if reserved:
        issues = [
            ConfigIssue(f"model.encoders.{key}", reserved_key_message(key)) for key in reserved
        ]
        raise ConfigError(issues, source=source)
    modalities = build_modalities(resolved.modalities)
    encoders = {}
    for key, component in resolved.encoders.items():
        encoder = build_component(component, Encoder)
        modality = getattr(encoder, "modality", None)
        if modality != component.spec.modality:
            raise ComponentError(
                f"{component.path}: encoder {component.spec.name!r} was registered for modality "
                f"{component.spec.modality!r} but its object's modality is {modality!r}"
            )
        _output_dim(component, encoder)
        encoders[key] = encoder
    input_dims = {key: encoders[key].output_dim for key in sorted(encoders)}
    late = combines_outputs(_factory(resolved.fusion))
    unimodal = None
    if late or resolved.unimodal_heads:
        unimodal = {
            key: build_component(
                replace(resolved.head, path=f"{resolved.head.path} (unimodal head of {key!r})"),
                Head,
                input_dim=dim,
            )
            for key, dim in input_dims.items()
        }
        for built in unimodal.values():
            _output_dim(resolved.head, built)
    head = None
    if late:
        assert unimodal is not None
        outputs = {key: built.output_dim for key, built in unimodal.items()}
        fusion = build_component(resolved.fusion, Fusion, input_dims=outputs)
    else:
        fusion = build_component(resolved.fusion, Fusion, input_dims=input_dims)
        head = build_component(resolved.head, Head, input_dim=_output_dim(resolved.fusion, fusion))
        _output_dim(resolved.head, head)
    return MultimodalModel(
        encoders,
        fusion,
        head,
        modalities,
        resolved,
        modality_dropout=resolved.modality_dropout,
        unimodal_heads=unimodal,
    )


def _factory(component: ResolvedComponent) -> object:
    """A component's factory, or None when it can't be imported (building says why)."""
    try:
        return component.spec.load_factory()
    except Exception:
        return None
