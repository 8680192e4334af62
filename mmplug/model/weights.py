"""Reading weight files and loading them into a module, with errors that say what is wrong.

For plugins whose encoders take local weights (``weights: /path/to/resnet50.pth``): a
missing or unreadable file, a file that holds something other than a state dict, and a state
dict that doesn't fit the architecture each become one :class:`ComponentError` naming the
file and listing the keys at fault. Files are read as data only: ``.safetensors`` with
safetensors, anything else with ``torch.load(weights_only=True)``, so no pickle code runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmplug.errors import ComponentError

#: How many keys an error lists before it counts the rest.
LISTED = 8


def listing(keys: Sequence[str], sep: str = ", ", limit: int = LISTED) -> str:
    """``a, b, c, ... and 12 more``."""
    shown = sep.join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... and {len(keys) - limit} more"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file.

    Raises:
        ComponentError: the file is missing (relative paths are named with the working
            directory they resolve against), unreadable, or not a mapping of names to tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ComponentError(
            f"weights file not found: {str(path)!r} (relative paths resolve against the "
            f"working directory, {os.getcwd()})"
        )
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(path, device="cpu")
        else:
            # weights_only: a checkpoint is data and must not run code when it is read
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each format reports a broken file with its own exception
        raise ComponentError(
            f"can't read weights file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(loaded, Mapping):
        raise ComponentError(
            f"weights file {str(path)!r} holds a {type(loaded).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)"
        )
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ComponentError(
            f"weights file {str(path)!r} is not a state dict: {listing(not_tensors)} are not "
            "tensors (a training checkpoint? save model.state_dict() itself)"
        )
    return dict(loaded)


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` when every key has it (``module.`` from DataParallel, a wrapper's)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key.removeprefix(prefix): value for key, value in state.items()}
    return dict(state)


def load_checked(
    module: nn.Module, state: Mapping[str, Tensor], *, source: str, target: str, hint: str = ""
) -> None:
    """``module.load_state_dict(state)``, or an error listing every key that does not fit.

    BatchNorm step counters (``num_batches_tracked``) may be missing: checkpoints saved before
    PyTorch 0.4.1 lack them and ``load_state_dict`` fills them in.

    Args:
        module: what to load into.
        state: the state dict.
        source: what the state dict is, for the message (``weights file '/w/r50.pth'``).
        target: what ``module`` is (``resnet50``).
        hint: appended to the first line of the message (``(is size right?)``).

    Raises:
        ComponentError: ``{source} doesn't fit {target}`` then a line each for the missing,
            unexpected and mis-shaped keys.
    """
    expected = module.state_dict()
    missing = [
        key for key in expected if key not in state and not key.endswith(".num_batches_tracked")
    ]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {list(state[key].shape)} in the file, {list(expected[key].shape)} in {target}"
        for key in state
        if key in expected and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or reshaped:
        lines = [f"{source} doesn't fit {target}{' ' + hint if hint else ''}:"]
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", reshaped),
        ):
            if keys:
                # "; " because the shape entries hold commas of their own
                lines.append(f"  {label} ({len(keys)}): {listing(keys, sep='; ')}")
        raise ComponentError("\n".join(lines))
    module.load_state_dict(state)  # BatchNorm fills absent step counters in itself
