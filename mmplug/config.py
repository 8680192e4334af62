"""Config files, overrides, and their validation against the registry.

A config names every component; nothing in it is code. Reading one is two steps:

1. :func:`load_config` reads YAML (safe loading only) or JSON, applies dotted overrides
   (``model.fusion.name=gated``) and checks the structure with pydantic.
2. :func:`resolve_model` looks each name up in the registry and validates each component's
   params against the params model its plugin registered.

Both steps report *every* problem at once, each with its dotted path
(``model.encoders.text.pooling: ...``), as one :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from mmplug.errors import ConfigError, ConfigIssue, DuplicateComponentError, UnknownComponentError
from mmplug.registry import ComponentSpec, Registry
from mmplug.sections import DataConfig, TrainConfig

ConfigSource = str | Path | Mapping[str, Any]

_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Attributes of torch.nn.ModuleDict (torch 2.9) that a key would collide with; listed here
# so validating never imports torch. Assembly checks again against the installed torch.
_RESERVED_KEYS = frozenset(
    {
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "clear",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "items",
        "keys",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "update",
        "values",
        "xpu",
        "zero_grad",
    }
)


class ComponentConfig(BaseModel):
    """``{name: ..., <param>: ...}``: a registered name plus that component's params."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Registered name, or distribution:name.")

    @property
    def params(self) -> dict[str, Any]:
        """Everything but ``name``."""
        return dict(self.model_extra or {})


def _check_key(key: str) -> str:
    if not _KEY_PATTERN.match(key):
        raise ValueError(
            f"invalid modality key {key!r}: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    if key in _RESERVED_KEYS:
        raise ValueError(reserved_key_message(key))
    return key


def reserved_key_message(key: str) -> str:
    """Why ``key`` can't be a modality key: it names an attribute of torch's ModuleDict."""
    return f"modality key {key!r} is reserved (an attribute of torch's ModuleDict)"


ModalityKey = Annotated[str, AfterValidator(_check_key)]


class ModelConfig(BaseModel):
    """The ``model`` section: one encoder per modality key, a fusion and a head."""

    model_config = ConfigDict(extra="forbid")

    encoders: dict[ModalityKey, ComponentConfig] = Field(
        description="Modality key (the name used in data and fusion) -> encoder."
    )
    fusion: ComponentConfig
    head: ComponentConfig
    modality_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="In training, drop each present modality of a sample with this "
        "probability (never all of them).",
    )

    @field_validator("encoders")
    @classmethod
    def _sorted(cls, encoders: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
        if not encoders:
            raise ValueError("at least one encoder is needed")
        return dict(sorted(encoders.items()))


class Config(BaseModel):
    """A whole config file: the model, and for training the data and how to train."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig
    data: DataConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)


# -- reading ---------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict; syntax errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"can't read config file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=str(path)
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML{_yaml_where(exc)}", source=str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping, not {type(data).__name__}", source=str(path)
        )
    return data


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` from a YAML error (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], *, source: str | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values parse as YAML (``3``, ``true``, ``[1, 2]``).

    Returns:
        A new dict; ``data`` is left as it was.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data))
    issues = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            issues.append(
                ConfigIssue(
                    "", f"override {override!r} is not KEY=VALUE (e.g. model.fusion.name=gated)"
                )
            )
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            issues.append(
                ConfigIssue(key, f"override value {raw!r} is not valid YAML{_yaml_where(exc)}")
            )
            continue
        node = result
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:  # absent, or an empty section (`head:` in YAML)
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                issues.append(
                    ConfigIssue(
                        key,
                        f"can't set {key!r}: {where} is a {type(child).__name__}, not a mapping",
                    )
                )
                break
            node = child
        else:
            node[parts[-1]] = value
    if issues:
        raise ConfigError(issues, source=source)
    return result


def load_config(source: ConfigSource | Config, overrides: Sequence[str] = ()) -> Config:
    """Read and structurally validate a config.

    Args:
        source: a file path (YAML or JSON), a dict, or a :class:`Config`. A dict without a
            ``model`` key but with ``encoders`` is taken as the model section alone.
        overrides: ``dotted.key=value`` strings applied on top.

    Raises:
        ConfigError: every structural problem, with paths.
    """
    if isinstance(source, Config) and not overrides:
        return source
    name = None
    if isinstance(source, Config):
        data: dict[str, Any] = source.model_dump(mode="json")
    elif isinstance(source, Mapping):
        data = dict(source)
        if "model" not in data and "encoders" in data:
            data = {"model": data}
    else:
        name = str(source)
        data = _anchored(read_config_file(source), Path(name).parent)
    data = apply_overrides(data, overrides, source=name)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues_from(exc), source=name) from None


def _anchored(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Manifest paths written in a config file resolve against the file's folder.

    Paths given as overrides on the command line are left relative to the working directory.
    """
    section = data.get("data")
    if not isinstance(section, dict):
        return data
    paths = {
        split: str(folder / path)
        for split in ("train", "val", "test")
        if isinstance(path := section.get(split), str) and not Path(path).expanduser().is_absolute()
    }
    return {**data, "data": {**section, **paths}}


def _issues_from(exc: ValidationError, prefix: str = "") -> list[ConfigIssue]:
    issues = []
    for error in exc.errors():
        # pydantic locates a bad dict key as (..., key, "[key]"): the key's path is enough.
        loc = ".".join(str(part) for part in error["loc"] if part != "[key]")
        path = ".".join(filter(None, [prefix, loc]))
        kind = error["type"]
        if kind == "missing":
            message = "required, but missing"
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind in ("model_type", "dict_type"):
            value = error.get("input")
            message = f"expected a mapping such as {{name: ...}}, got {value!r}"
        elif kind == "value_error":
            message = str(error["ctx"]["error"])  # our own message, without "Value error, "
        else:
            message = error["msg"]
            value = error.get("input")
            if isinstance(value, str | int | float | bool) or value is None:
                message += f" (got {value!r})"
        issues.append(ConfigIssue(path, message))
    return issues


# -- resolving against the registry ----------------------------------------------------------


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

    def to_config(self) -> dict[str, Any]:
        """The fully resolved ``model`` section."""
        return {
            "encoders": {key: enc.to_config() for key, enc in self.encoders.items()},
            "fusion": self.fusion.to_config(),
            "head": self.head.to_config(),
            "modality_dropout": self.modality_dropout,
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
        issues.extend(_issues_from(exc, prefix=path))
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
    )


def _by_distribution(spec: ComponentSpec) -> str:
    return spec.distribution
