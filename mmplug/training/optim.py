"""Optimizer, learning-rate schedule and their state as files without pickle.

AdamW over two kinds of parameters (decayed: weight matrices and kernels; not decayed:
biases, norms, embeddings' 1-D scales), with each encoder's optionally at its own learning
rate. The schedule warms up linearly (each encoder's optionally over its own number of
steps), then decays along a cosine to ``min_lr_ratio``.

Optimizer state is saved as a safetensors file (tensors) plus JSON (everything else), so
resuming never unpickles anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmplug.model.sections import TrainConfig, per_key


def param_groups(model: nn.Module, settings: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters in groups: (one per encoder key, or the rest) x (decayed or not).

    Each encoder's groups take its learning rate from ``encoder_lr`` (one value for every
    encoder, or one per key; ``lr`` where none is given) and name its key (``key``; None for
    the fusion and heads).
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        parts = name.split(".")
        owner = f"encoders.{parts[1]}" if parts[0] == "encoders" else ""
        groups.setdefault((owner, param.ndim >= 2), []).append(param)
    result = []
    for (owner, decayed), params in sorted(
        groups.items(), key=lambda item: (item[0][0] != "", item[0])
    ):
        key = owner.removeprefix("encoders.") if owner else None
        result.append(
            {
                "params": params,
                "key": key,
                "lr": settings.lr
                if key is None
                else per_key(settings.encoder_lr, key, settings.lr),
                "weight_decay": settings.weight_decay if decayed else 0.0,
                "name": f"{owner or 'fusion+head'}{'' if decayed else ' (no decay)'}",
            }
        )
    return result


def group_schedules(
    groups: list[dict[str, Any]], settings: TrainConfig, total_steps: int
) -> list[Callable[[int], float]]:
    """Each parameter group's learning-rate factor per step (:func:`warmup_cosine`): an
    encoder's group warms up over ``encoder_warmup`` (its key's, or the one for all), the
    rest over ``warmup``."""
    return [
        warmup_cosine(
            total_steps,
            settings.warmup
            if group.get("key") is None
            else per_key(settings.encoder_warmup, group["key"], settings.warmup),
            settings.min_lr_ratio,
        )
        for group in groups
    ]


def make_optimizer(model: nn.Module, settings: TrainConfig) -> torch.optim.AdamW:
    groups = param_groups(model, settings)
    if not groups:
        from mmplug.errors import ConfigError

        raise ConfigError("the model has no trainable parameters (is every encoder frozen?)")
    # torch's default implementation: foreach kernels on CUDA; on CPU, foreach and per-tensor
    # steps take the same time within noise (benchmarks/training_step.py)
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def warmup_cosine(total_steps: int, warmup: float, min_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warmup, then cosine down to ``min_ratio``.

    Args:
        total_steps: optimizer steps of the whole run.
        warmup: a fraction of ``total_steps`` if below 1, else a number of steps.
        min_ratio: the factor at the last step.
    """
    warm = round(warmup * total_steps) if warmup < 1 else int(warmup)
    warm = min(warm, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path, name: str) -> dict[str, Any]:
    """Write the optimizer's tensors to ``folder/name`` (safetensors); return the rest as JSON."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(folder / name))
    return {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    optimizer: torch.optim.Optimizer, folder: Path, name: str, meta: dict[str, Any]
) -> None:
    """Restore what :func:`save_optimizer` wrote."""
    from safetensors.torch import load_file

    state: dict[int, dict[str, Any]] = {}
    entries = {**load_file(str(folder / name)), **meta["scalars"]}
    for flat, value in entries.items():
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def jsonable(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's or scaler's state dict with what JSON can't hold dropped (functions)."""
    result: dict[str, Any] = json.loads(json.dumps(state, default=lambda value: None))
    return result
