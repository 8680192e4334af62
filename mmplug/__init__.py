"""mmplug: multimodal models assembled from named, pluggable parts.

This module is the public face, for users and for plugin authors alike:

- for plugins: ``hookimpl``, the interfaces (``Modality``, ``Encoder``, ``EncoderOutput``,
  ``Fusion``, ``Head``, ``Task``), ``Params`` (the base of params models), ``RegisterFn``,
  the errors, ``brief`` (a value's repr bounded for a message), and the weight-file
  helpers ``read_state_dict``, ``load_checked`` and ``strip_prefix``;
- for users: ``validate``, ``build_model``, ``save_model``, ``load_model``, ``train``,
  ``compare``, ``load`` and ``evaluate``, which use the installed plugins unless given a
  ``registry``, plus ``Config``, ``load_config``, ``Pipeline``, ``Batch``, ``MultimodalModel``,
  ``Predictor``, ``Reporter``, ``Registry`` and ``load_plugins`` (to add a plugin object
  by hand).

Inside the package the registry is always an explicit argument; only these functions and the
``mmplug`` command fill in the installed plugins' one. ``import mmplug`` is cheap: every name
but the errors, ``brief``, ``hookimpl`` and the versions is imported on first access, so listing
plugins never loads torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmplug.errors import (
    ComponentError,
    ConfigError,
    ConfigIssue,
    DataError,
    DuplicateComponentError,
    MmplugError,
    MmplugWarning,
    PluginLoadError,
    UnknownComponentError,
    brief,
)
from mmplug.plugins.hookspecs import API_VERSION, hookimpl
from mmplug.version import __version__

if TYPE_CHECKING:
    from mmplug.data.pipeline import Pipeline
    from mmplug.model.checkpoint import save_model
    from mmplug.model.config import Config, ConfigSource, load_config
    from mmplug.model.interfaces import (
        Encoder,
        EncoderOutput,
        Fusion,
        Head,
        Modality,
        Preprocessor,
    )
    from mmplug.model.multimodal import Batch, ModelOutput, MultimodalModel
    from mmplug.model.resolve import ResolvedModel
    from mmplug.model.tasks import ClassificationTask, MultilabelTask, RegressionTask, Task
    from mmplug.model.weights import load_checked, read_state_dict, strip_prefix
    from mmplug.plugins.loading import load_plugins
    from mmplug.plugins.params import Params
    from mmplug.plugins.registry import RegisterFn, Registry
    from mmplug.runs.evaluation import Evaluation
    from mmplug.runs.predictor import Predictor
    from mmplug.training.progress import Reporter

_LAZY = {
    "Modality": "mmplug.model.interfaces",
    "Encoder": "mmplug.model.interfaces",
    "EncoderOutput": "mmplug.model.interfaces",
    "Fusion": "mmplug.model.interfaces",
    "Head": "mmplug.model.interfaces",
    "Preprocessor": "mmplug.model.interfaces",
    "Task": "mmplug.model.tasks",
    "ClassificationTask": "mmplug.model.tasks",
    "MultilabelTask": "mmplug.model.tasks",
    "RegressionTask": "mmplug.model.tasks",
    "Params": "mmplug.plugins.params",
    "RegisterFn": "mmplug.plugins.registry",
    "read_state_dict": "mmplug.model.weights",
    "load_checked": "mmplug.model.weights",
    "strip_prefix": "mmplug.model.weights",
    "Batch": "mmplug.model.multimodal",
    "ModelOutput": "mmplug.model.multimodal",
    "MultimodalModel": "mmplug.model.multimodal",
    "Pipeline": "mmplug.data.pipeline",
    "save_model": "mmplug.model.checkpoint",
    "Config": "mmplug.model.config",
    "load_config": "mmplug.model.config",
    "Predictor": "mmplug.runs.predictor",
    "Reporter": "mmplug.training.progress",
    "Registry": "mmplug.plugins.registry",
    "load_plugins": "mmplug.plugins.loading",
}

__all__ = [
    "API_VERSION",
    "Batch",
    "ClassificationTask",
    "ComponentError",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DataError",
    "DuplicateComponentError",
    "Encoder",
    "EncoderOutput",
    "Fusion",
    "Head",
    "MmplugError",
    "MmplugWarning",
    "Modality",
    "ModelOutput",
    "MultilabelTask",
    "MultimodalModel",
    "Params",
    "Pipeline",
    "PluginLoadError",
    "Predictor",
    "Preprocessor",
    "RegisterFn",
    "Registry",
    "RegressionTask",
    "Reporter",
    "Task",
    "UnknownComponentError",
    "__version__",
    "brief",
    "build_model",
    "compare",
    "evaluate",
    "hookimpl",
    "load",
    "load_checked",
    "load_config",
    "load_model",
    "load_plugins",
    "read_state_dict",
    "save_model",
    "strip_prefix",
    "train",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _registry(registry: Registry | None) -> Registry:
    """``registry``, or the installed plugins' (loaded once per process)."""
    if registry is not None:
        return registry
    from mmplug.plugins.loading import default_registry

    return default_registry()


def validate(
    config: ConfigSource | Config,
    *,
    registry: Registry | None = None,
    overrides: Sequence[str] = (),
) -> ResolvedModel:
    """Check a config's names and params without building anything (``mmplug validate``).

    Returns:
        The model section resolved: each component's spec and validated params.

    Raises:
        ConfigError: every problem, with paths.
    """
    from mmplug.model.config import load_config
    from mmplug.model.resolve import resolve_model

    source = str(config) if isinstance(config, str | Path) else None
    return resolve_model(load_config(config, overrides), _registry(registry), source=source)


def build_model(
    config: ConfigSource | Config,
    *,
    registry: Registry | None = None,
    overrides: Sequence[str] = (),
) -> MultimodalModel:
    """Build a model from a config: a file path, a dict or a :class:`Config`.

    Args:
        config: the config; its ``model`` section is used.
        registry: where names are looked up; default: the installed plugins'.
        overrides: ``dotted.key=value`` strings applied first.

    Raises:
        ConfigError: every problem with names and params, with paths.
        ComponentError: a component failed to build or broke its interface.
    """
    from mmplug.model.build import build_model as build

    return build(config, _registry(registry), overrides=overrides)


def load_model(directory: str | Path, *, registry: Registry | None = None) -> MultimodalModel:
    """Rebuild a model that :func:`save_model` wrote (see :mod:`mmplug.model.checkpoint`)."""
    from mmplug.model.checkpoint import load_model as load_saved

    return load_saved(directory, _registry(registry))


def train(
    config: ConfigSource | Config | None = None,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    registry: Registry | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Train a model; returns the run directory (see :func:`mmplug.training.train.train`).

    Args:
        config: a config file, dict or :class:`Config` with ``model`` and ``data`` sections;
            with ``resume`` it may be left out.
        overrides: ``dotted.key=value`` strings applied to the config.
        out: the run directory to create; default ``runs/<time>``.
        resume: a run directory to continue from its ``last/`` checkpoint.
        registry: where names are looked up; default: the installed plugins'.
        reporter: where progress goes; default: log lines on stdout, bars on a terminal.
    """
    from mmplug.training.train import train as run_training

    return run_training(
        config,
        overrides,
        registry=_registry(registry),
        out=out,
        resume=resume,
        reporter=reporter,
    )


def compare(
    config: ConfigSource | Config,
    overrides: Sequence[str] = (),
    *,
    out: str | Path,
    registry: Registry | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train the fused model and each modality alone, and compare them on the test split
    (see :mod:`mmplug.training.compare`); returns what ``compare.json`` holds."""
    from mmplug.training.compare import compare as run_comparison

    return run_comparison(
        config, overrides, registry=_registry(registry), out=out, reporter=reporter
    )


def load(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "auto",
    registry: Registry | None = None,
) -> Predictor:
    """Load a run directory's ``best`` (or ``last``) checkpoint as a :class:`Predictor`."""
    from mmplug.runs.predictor import load as load_run

    return load_run(run_dir, _registry(registry), checkpoint=checkpoint, device=device)


def evaluate(
    run_dir: str | Path,
    data: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "auto",
    batch_size: int = 32,
    registry: Registry | None = None,
) -> Evaluation:
    """Evaluate a run's checkpoint on the labelled manifest ``data``."""
    from mmplug.runs.predictor import evaluate as evaluate_run

    return evaluate_run(
        run_dir,
        data,
        _registry(registry),
        checkpoint=checkpoint,
        device=device,
        batch_size=batch_size,
    )
