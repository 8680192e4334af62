"""Finding a checkpoint: a local folder or a hub id, online or offline, with errors that say
what to do.

Loading honours ``HF_HUB_OFFLINE`` (read when the encoder is built, not only when
``huggingface_hub`` was imported) and the local cache; when the files can't be had, the error
names the checkpoint and says how to point ``pretrained`` at a local directory instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from transformers import AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mmplug import ComponentError

T = TypeVar("T")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline() -> bool:
    """Offline mode, from the environment now or from when ``huggingface_hub`` was imported."""
    from huggingface_hub import constants

    from_env = _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")
    return from_env or bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _offline_mode() -> Iterator[bool]:
    """Make huggingface_hub offline for a load when the environment says so; yields whether.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is imported. Passing
    ``local_files_only`` is not enough when the variable was set later (in a notebook, or a
    test): the hub client still contacts the Hub for other things (its user-agent lookup),
    which without network means retries and a long wait. So its flag is set for the load.
    """
    from huggingface_hub import constants

    offline = _offline()
    before = constants.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = before


def _looks_like_path(value: str) -> bool:
    """Whether ``pretrained`` is meant as a folder rather than a hub id (``org/name``)."""
    return (
        value.startswith(("/", "./", "../", "~", "."))
        or "\\" in value
        or value.count("/") > 1
        or Path(value).is_absolute()
    )


def checkpoint(pretrained: str) -> str:
    """``pretrained`` as transformers should get it: an existing directory, or a hub id.

    Raises:
        ComponentError: it names a file, or a directory that does not exist.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ComponentError(
            f"pretrained {pretrained!r} is a file; give the directory save_pretrained wrote "
            "(config.json, weights and tokenizer files) or a hub id"
        )
    if _looks_like_path(pretrained):
        raise ComponentError(
            f"checkpoint directory not found: {pretrained!r} (looked for {path.absolute()})"
        )
    return pretrained


def from_hub(load: Callable[..., T], source: str, what: str) -> T:
    """Call a ``from_pretrained`` loader; a checkpoint that can't be had is a clear error."""
    try:
        with _offline_mode() as offline:
            return load(source, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError) as exc:  # transformers turns hub errors into OSError
        raise _unavailable(source, what, exc) from exc


def _unavailable(source: str, what: str, exc: BaseException) -> ComponentError:
    cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    if Path(source).is_dir():
        return ComponentError(f"can't load the {what} from checkpoint directory {source}: {cause}")
    from huggingface_hub import constants

    why = (
        "HF_HUB_OFFLINE is set, so nothing is downloaded"
        if _offline()
        else "it could not be downloaded (no network, or no such repository)"
    )
    return ComponentError(
        f"can't load the {what} of checkpoint {source!r}: {why}, and it is neither a local "
        f"directory nor in the Hugging Face cache ({constants.HF_HUB_CACHE}). Where there is "
        f"network, download it (`hf download {source}`, then copy the cache), or save it to a "
        f"folder (AutoModel.from_pretrained({source!r}).save_pretrained(DIR), and the same "
        "with AutoTokenizer) and set `pretrained: /path/to/DIR`. "
        f"Cause: {cause}"
    )


def tokenizer_if_any(source: str) -> PreTrainedTokenizerBase | None:
    """The checkpoint's tokenizer, or None when it has no tokenizer files.

    Raises:
        ComponentError: ``source`` is a directory whose tokenizer files can't be read (a
            directory without any gives an empty tokenizer, not an error): training a new
            vocabulary instead would silently change what the model reads.
    """
    try:
        tokenizer = from_hub(AutoTokenizer.from_pretrained, source, "tokenizer")
    except ComponentError:
        if Path(source).is_dir():
            raise
        return None
    return None if is_empty(tokenizer) else tokenizer


def is_empty(tokenizer: PreTrainedTokenizerBase) -> bool:
    # transformers 5 builds a tokenizer holding only its special tokens when a checkpoint has
    # no tokenizer files at all, instead of failing: a vocabulary of specials is no tokenizer.
    return len(tokenizer) <= len(tokenizer.all_special_tokens)
