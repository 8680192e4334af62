"""Reading configs: files, overrides and the structure of a config.

A config names every component; nothing in it is code. :func:`load_config` reads YAML (safe
loading only) or JSON, applies dotted overrides (``model.fusion.name=gated``) and checks the
structure with pydantic, reporting *every* problem at once, each with its dotted path
(``model.encoders.text.pooling: ...``), as one :class:`ConfigError`. Looking the names up in
the registry and validating each component's params is the next step,
:func:`mmplug.model.resolve.resolve_model`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmplug.errors import ConfigError, ConfigIssue, brief, parse_problem
from mmplug.model.keys import ModalityKey
from mmplug.model.sections import DataConfig, TrainConfig

ConfigSource = str | Path | Mapping[str, Any]


class _Entry(BaseModel):
    """A config entry: a name and a component's params as the other keys."""

    model_config = ConfigDict(extra="allow")

    @property
    def params(self) -> dict[str, Any]:
        """Everything but ``name``."""
        return dict(self.model_extra or {})


class ComponentConfig(_Entry):
    """``{name: ..., <param>: ...}``: a registered name plus that component's params."""

    name: str = Field(description="Registered name, or distribution:name.")


class ModalityConfig(_Entry):
    """``{<param>: ...}`` for the modality that loads one key's values: the one the key's
    encoder consumes, so ``name`` is optional (a qualified name picks its distribution)."""

    name: str | None = Field(
        default=None,
        description="The modality the key's encoder consumes, or distribution:name of it.",
    )


class ModelConfig(BaseModel):
    """The ``model`` section: one encoder per modality key (and, optionally, params for the
    modality that loads it), a fusion and a head."""

    model_config = ConfigDict(extra="forbid")

    encoders: dict[ModalityKey, ComponentConfig] = Field(
        description="Modality key (the name used in data and fusion) -> encoder."
    )
    modalities: dict[ModalityKey, ModalityConfig] = Field(
        default_factory=dict,
        description="Modality key -> params of the modality that loads that key's values "
        "(the one its encoder consumes), such as {image: {max_pixels: 200000000}}; a key "
        "left out gets the modality's defaults.",
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
    unimodal_heads: bool | None = Field(
        default=None,
        description="Also give each modality key a head of its own on that encoder's "
        "features, trained with its own loss (train.unimodal_loss), so that no encoder is "
        "starved by a faster one; the late fusion uses them. Default: on when the model has "
        "two or more modality keys.",
    )

    @field_validator("encoders")
    @classmethod
    def _sorted(cls, encoders: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
        if not encoders:
            raise ValueError("at least one encoder is needed")
        return dict(sorted(encoders.items()))

    @field_validator("modalities")
    @classmethod
    def _sorted_modalities(cls, modalities: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        return dict(sorted(modalities.items()))


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
            data = json.loads(text, object_pairs_hook=unique_keys)
        else:
            data = yaml.load(text, Loader=UniqueKeyLoader)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=str(path)
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML{_yaml_where(exc)}", source=str(path)) from exc
    except RecursionError:
        raise ConfigError("nested too deeply to read", source=str(path)) from None
    except ValueError as exc:  # a duplicate key; an integer of more than 4,300 digits
        raise ConfigError(parse_problem(exc), source=str(path)) from None
    check_size(data, source=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping, not {type(data).__name__}", source=str(path)
        )
    return data


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``object_pairs_hook``: a key given twice is an error, not the last
    one silently winning."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {brief(key)} is given twice")
        result[key] = value
    return result


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (no tags that run code), refusing a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                mark = key_node.start_mark
                raise ValueError(
                    f"key {brief(key)} is given twice (line {mark.line + 1}, column "
                    f"{mark.column + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


#: The most values a config may hold once YAML's aliases are expanded.
MAX_CONFIG_VALUES = 100_000


def check_size(data: Any, *, source: str | None = None) -> None:
    """Refuse a config that is huge once its aliases (``&a`` / ``*a``) are expanded, or
    that refers to itself: validating or printing it would take unbounded time and memory
    (a 1.5 KB "billion laughs" file expands to 10^9 values). Counted without expanding
    anything: each shared value's size is counted once and reused."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError("it refers to itself (a recursive YAML alias)", source=source)
        active.add(key)
        children = value.values() if isinstance(value, dict) else value
        total = 1 + sum(size(child) for child in children)
        active.discard(key)
        sizes[key] = total
        if total > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"it holds {total:,}+ values once its YAML aliases are expanded (at most "
                f"{MAX_CONFIG_VALUES:,}); a config this large is refused unread",
                source=source,
            )
        return total

    try:
        size(data)
    except RecursionError:
        raise ConfigError("nested too deeply to read", source=source) from None


def read_saved_config(path: str | Path) -> dict[str, Any]:
    """A config that a run or a saved model wrote, with what an earlier mmplug left out
    filled in as that version behaved: without ``model.unimodal_heads`` (saved before the
    setting existed), the model had none."""
    data = read_config_file(path)
    model = data.get("model")
    if isinstance(model, dict):
        model.setdefault("unimodal_heads", False)
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
            value = yaml.load(raw, Loader=UniqueKeyLoader) if raw.strip() else ""
            check_size(value)
        except yaml.YAMLError as exc:
            issues.append(
                ConfigIssue(key, f"override value {raw!r} is not valid YAML{_yaml_where(exc)}")
            )
            continue
        except ConfigError as exc:  # an alias bomb in one value
            issues.append(ConfigIssue(key, f"override value: {exc}"))
            continue
        except RecursionError:
            issues.append(ConfigIssue(key, "override value nested too deeply"))
            continue
        except ValueError as exc:  # a key given twice; a 4,300+ digit number
            issues.append(ConfigIssue(key, f"override value: {parse_problem(exc)}"))
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
        raise ConfigError(issues_from(exc), source=name) from None


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


def issues_from(exc: ValidationError, prefix: str = "") -> list[ConfigIssue]:
    """pydantic's errors as config issues: dotted paths under ``prefix``, plain messages."""
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
            message = f"expected a mapping such as {{name: ...}}, got {brief(value)}"
        elif kind == "value_error":
            message = str(error["ctx"]["error"])  # our own message, without "Value error, "
        else:
            message = error["msg"]
            value = error.get("input")
            if isinstance(value, str | int | float | bool) or value is None:
                message += f" (got {brief(value)})"
        issues.append(ConfigIssue(path, message))
    return issues


def with_head_param(config: Config, name: str, value: Any) -> Config:
    """``config`` with the head's param ``name`` set to ``value`` (validated again)."""
    head = config.model.head
    filled = ComponentConfig.model_validate({"name": head.name, **head.params, name: value})
    model = config.model.model_copy(update={"head": filled})
    return config.model_copy(update={"model": model})
