"""mmplug: multimodal models assembled from named, pluggable parts.

``import mmplug`` is cheap: the torch-backed names (``Encoder``, ``build_model``, ...) are
imported on first access, so listing plugins never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from mmplug.errors import (
    ComponentError,
    ConfigError,
    ConfigIssue,
    DataError,
    DuplicateComponentError,
    MmplugError,
    PluginLoadError,
    UnknownComponentError,
)
from mmplug.hookspecs import API_VERSION, hookimpl

if TYPE_CHECKING:
    from mmplug.assembly import Batch, ModelOutput, MultimodalModel, build_model
    from mmplug.checkpoint import load_model, save_model
    from mmplug.config import Config, load_config
    from mmplug.interfaces import Encoder, EncoderOutput, Fusion, Head, Modality
    from mmplug.predictor import Predictor, evaluate, load
    from mmplug.training import train

_LAZY = {
    "Modality": "mmplug.interfaces",
    "Encoder": "mmplug.interfaces",
    "EncoderOutput": "mmplug.interfaces",
    "Fusion": "mmplug.interfaces",
    "Head": "mmplug.interfaces",
    "Batch": "mmplug.assembly",
    "ModelOutput": "mmplug.assembly",
    "MultimodalModel": "mmplug.assembly",
    "build_model": "mmplug.assembly",
    "save_model": "mmplug.checkpoint",
    "load_model": "mmplug.checkpoint",
    "Config": "mmplug.config",
    "load_config": "mmplug.config",
    "Predictor": "mmplug.predictor",
    "load": "mmplug.predictor",
    "evaluate": "mmplug.predictor",
    "train": "mmplug.training",
}

__all__ = [
    "API_VERSION",
    "Batch",
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
    "Modality",
    "ModelOutput",
    "MultimodalModel",
    "PluginLoadError",
    "Predictor",
    "UnknownComponentError",
    "__version__",
    "build_model",
    "evaluate",
    "hookimpl",
    "load",
    "load_config",
    "load_model",
    "save_model",
    "train",
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
