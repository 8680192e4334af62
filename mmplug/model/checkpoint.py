"""Saving a built model to a folder and rebuilding it from there by name.

A saved model is a folder::

    config.yaml          the fully resolved ``model`` section (every default written out)
    model.safetensors    the weights (safetensors: no pickle, nothing executed on load)
    fitted/<key>/        what each encoder's ``fit`` learned (e.g. a trained tokenizer)

:func:`load_model` rebuilds the model from ``config.yaml`` through the registry, the same way
``build_model`` does, restores each encoder's fitted state and then loads the weights, so a
saved model needs the plugins that built it but none of the data it was fitted on.

The folder is written next to its final place and swapped in at the end: a process killed
while saving leaves the previous save intact.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml

from mmplug.errors import ComponentError, ConfigError, MmplugError
from mmplug.files import staged_dir
from mmplug.model.build import build_model
from mmplug.model.config import read_saved_config
from mmplug.model.multimodal import MultimodalModel
from mmplug.model.weights import listing
from mmplug.plugins.registry import Registry

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
FITTED_DIR = "fitted"


def save_model(
    model: MultimodalModel,
    directory: str | Path,
    *,
    extra: Callable[[Path], None] | None = None,
    weights_from: Path | None = None,
) -> Path:
    """Save ``model`` into ``directory`` (replacing a previous save there).

    Args:
        model: a model built by :func:`mmplug.build_model` (it knows its resolved config).
        directory: the folder to write; its parent must exist or be creatable.
        extra: writes more files into the folder before it is swapped in (the trainer's
            optimizer state), so that they land together with the weights.
        weights_from: a weights file that holds exactly this model's weights (the trainer's
            ``last/`` when it saves ``best/`` from the same step): hard-linked instead of
            written again. Saved files are never changed in place, only replaced, so the two
            names stay independent.

    Returns:
        The folder written.

    Raises:
        MmplugError: the model was not built from a config, so it can't be rebuilt by name.
    """
    from safetensors.torch import save_model as save_weights

    if model.resolved is None:
        raise MmplugError("only a model built from a config (build_model) can be saved by name")
    with staged_dir(directory) as staging:
        config = {"model": model.resolved.to_config()}
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        if not _link(weights_from, staging / WEIGHTS_FILE):
            save_weights(model, str(staging / WEIGHTS_FILE))
        for key, encoder in model.encoder_items():
            folder = staging / FITTED_DIR / key
            folder.mkdir(parents=True)
            encoder.save_fitted(folder)
            if not any(folder.iterdir()):
                folder.rmdir()
        fitted = staging / FITTED_DIR
        if not any(fitted.iterdir()):
            fitted.rmdir()
        if extra is not None:
            extra(staging)
    return Path(directory)


def load_model(directory: str | Path, registry: Registry) -> MultimodalModel:
    """Rebuild a model saved by :func:`save_model`.

    Args:
        directory: the saved folder.
        registry: where component names are looked up.

    Raises:
        MmplugError: the folder is not a saved model.
        ConfigError: a component it names is not installed, or its params no longer validate.
        ComponentError: the weights don't fit the rebuilt model (lists the keys).
    """
    from safetensors.torch import load_model as load_weights

    folder = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise MmplugError(f"{folder} is not a saved model: {name} is missing")
    try:
        model = build_model(read_saved_config(folder / CONFIG_FILE), registry)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=str(folder / CONFIG_FILE)) from None
    for key, encoder in model.encoder_items():
        fitted = folder / FITTED_DIR / key
        if fitted.is_dir():
            encoder.load_fitted(fitted)
    where = f"{folder / WEIGHTS_FILE} does not fit the model rebuilt from {CONFIG_FILE}"
    # safetensors stores tied weights once; its loader knows which names share a tensor.
    try:
        missing, unexpected = load_weights(model, str(folder / WEIGHTS_FILE), strict=False)
    except RuntimeError as exc:  # torch lists every size mismatch, one per line
        raise ComponentError(f"{where}: {exc}") from exc
    if missing or unexpected:
        raise ComponentError(
            f"{where}: missing {listing(sorted(missing)) or 'none'}; "
            f"unexpected {listing(sorted(unexpected)) or 'none'}"
        )
    return model


def _link(source: Path | None, target: Path) -> bool:
    """Hard-link ``source`` to ``target``; False where that can't be done (no source, another
    file system, a file system without links)."""
    if source is None or not source.is_file():
        return False
    try:
        os.link(source, target)
    except OSError:
        return False
    return True
