"""Saving a built model to a folder and rebuilding it from there by name.

A saved model is a folder::

    config.yaml          the fully resolved ``model`` section (every default written out)
    model.safetensors    the weights (safetensors: no pickle, nothing executed on load)
    fitted/<key>/        what each encoder's ``fit`` learned (e.g. a trained tokenizer)
    checksums.json       the sha256 of every other file, written last

:func:`load_model` rebuilds the model from ``config.yaml`` through the registry, the same way
``build_model`` does, restores each encoder's fitted state and then loads the weights, so a
saved model needs the plugins that built it but none of the data it was fitted on.

The folder is written next to its final place and swapped in at the end: a process killed
while saving leaves the previous save intact. :func:`load_model` first checks every file
against ``checksums.json`` (:func:`verify_saved`): a truncated, overwritten or bit-flipped
file is an error naming it, never used. Saves written before checksums existed load
unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
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
CHECKSUMS_FILE = "checksums.json"


def save_model(
    model: MultimodalModel,
    directory: str | Path,
    *,
    extra: Callable[[Path], None] | None = None,
    weights_from: Path | None = None,
    depends_on: Sequence[Path] = (),
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
        depends_on: files outside the folder that using it needs (the run's ``labels.json``):
            their checksums are recorded too, by path relative to the folder.

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
        _write_checksums(staging, Path(directory), depends_on)
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
    verify_saved(folder)
    try:
        model = build_model(read_saved_config(folder / CONFIG_FILE), registry)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=str(folder / CONFIG_FILE)) from None
    for key, encoder in model.encoder_items():
        fitted = folder / FITTED_DIR / key
        if fitted.is_dir():
            try:
                encoder.load_fitted(fitted)
            except MmplugError:
                raise
            except Exception as exc:  # a plugin's reader meeting a damaged file
                raise MmplugError(
                    f"{fitted} could not be read by encoder {key!r} "
                    f"({type(exc).__name__}: {str(exc)[:200]}); {DAMAGED_ADVICE}"
                ) from exc
    where = f"{folder / WEIGHTS_FILE} does not fit the model rebuilt from {CONFIG_FILE}"
    # safetensors stores tied weights once; its loader knows which names share a tensor.
    try:
        missing, unexpected = load_weights(model, str(folder / WEIGHTS_FILE), strict=False)
    except RuntimeError as exc:  # torch lists every size mismatch, one per line
        raise ComponentError(f"{where}: {exc}") from exc
    except Exception as exc:  # safetensors' own error: a file that is not safetensors
        raise MmplugError(
            f"{folder / WEIGHTS_FILE} is damaged ({str(exc)[:200]}); {DAMAGED_ADVICE}"
        ) from exc
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


#: What to do about a damaged file in a run's checkpoint.
DAMAGED_ADVICE = (
    "use the run's other checkpoint (--checkpoint last or best; train --resume continues "
    "from last/), or train again"
)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_checksums(staging: Path, final: Path, depends_on: Sequence[Path]) -> None:
    files = {
        path.relative_to(staging).as_posix(): sha256_of(path)
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    for outside in depends_on:
        files[Path(os.path.relpath(outside, final)).as_posix()] = sha256_of(outside)
    listed = {"algorithm": "sha256", "files": files, "self": _listing_digest(files)}
    text = json.dumps(listed, indent=2) + "\n"
    (staging / CHECKSUMS_FILE).write_text(text, encoding="utf-8")


def verify_saved(folder: Path) -> None:
    """Check every file a saved model lists in ``checksums.json`` (nothing, for a save
    written before checksums existed).

    Raises:
        MmplugError: a listed file is missing or its contents changed; names it.
    """
    listing_path = folder / CHECKSUMS_FILE
    if not listing_path.is_file():
        return
    try:
        listed = json.loads(listing_path.read_text(encoding="utf-8"))
        files, digest = listed.get("files"), listed.get("self")
    except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
        files = digest = None
    if (
        not isinstance(files, dict)
        or not all(isinstance(v, str) for v in files.values())
        or digest != _listing_digest(files)
    ):
        raise MmplugError(
            f"{listing_path} is damaged (not the checksum list that was saved); {DAMAGED_ADVICE}"
        )
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise MmplugError(f"{path} is missing (listed in {listing_path}); {DAMAGED_ADVICE}")
        if sha256_of(path) != expected:
            raise MmplugError(
                f"{path.resolve() if '..' in name else path} is damaged: its contents differ "
                f"from when {folder} was saved (sha256 in {CHECKSUMS_FILE}); {DAMAGED_ADVICE} "
                f"(if it was changed on purpose, delete {CHECKSUMS_FILE} to load it unchecked)"
            )


def _listing_digest(files: dict[str, str]) -> str:
    """The checksum list's own checksum: a damaged list is not mistaken for a damaged file."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
