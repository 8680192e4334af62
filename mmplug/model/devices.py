"""Where a model runs: choosing the device, and mixed precision around a forward pass."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from mmplug.errors import ConfigError, ConfigIssue

#: Device types a model can train and predict on.
USABLE = ("cpu", "cuda", "mps", "xpu")


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be usable here.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        setting: how the user gave ``name``, for the error (``--device``).

    Raises:
        ConfigError: the device does not exist on this machine.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        if device.type not in USABLE:  # meta holds no data; others run nothing of ours
            raise RuntimeError(f"mmplug runs models on {', '.join(USABLE)}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this machine")
        torch.empty(0, device=device)  # an index or a backend this machine doesn't have
    except (RuntimeError, AssertionError) as exc:
        raise ConfigError([ConfigIssue(setting, f"can't use device {name!r}: {exc}")]) from None
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for ``bf16``/``fp16``; nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
