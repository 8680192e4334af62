"""Checks of a head: output shape, a differentiable finite loss, predictions and metrics, and
the task it learns."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmplug.model.interfaces import Head
from mmplug.testing.checks.common import backward, build, finite

if TYPE_CHECKING:
    from mmplug.testing import Case

BATCH = 5
HEAD_INPUT_DIM = 6

#: Targets for the core tasks, made from the head's outputs ``[B, C]``, as a data pipeline
#: gives them: class indices ``[B]``; 0/1 integers ``[B, C]``; values ``[B]`` for one target,
#: ``[B, C]`` for several.
DEFAULT_TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "classification": lambda out: torch.arange(out.shape[0]) % out.shape[1],
    "multilabel": lambda out: (
        (torch.arange(out.shape[0])[:, None] + torch.arange(out.shape[1])) % 2
    ),
    "regression": lambda out: torch.linspace(-1.0, 1.0, out.numel()).view_as(out).squeeze(-1),
}


def head_and_outputs(case: Case) -> tuple[Head, Tensor, Tensor]:
    head = build(case, Head, input_dim=HEAD_INPUT_DIM)
    fused = torch.randn(BATCH, HEAD_INPUT_DIM, generator=torch.Generator().manual_seed(6))
    outputs = head(fused)
    make = case.kit.targets.get(head.task) or DEFAULT_TARGETS.get(head.task)
    assert make is not None, (
        f"{case.who()}: no targets for task {head.task!r}; give Conformance(targets="
        f"{{{head.task!r}: lambda outputs: ...}})"
    )
    return head, outputs, make(outputs.detach())


def check_head_output_shape(case: Case) -> None:
    """``forward`` maps ``[B, input_dim]`` to ``[B, output_dim]``."""
    head, outputs, _ = head_and_outputs(case)
    expected = (BATCH, head.output_dim)
    assert tuple(outputs.shape) == expected, (
        f"{case.who()}: outputs have shape {tuple(outputs.shape)}, expected {expected}"
    )


def check_head_loss(case: Case) -> None:
    """The loss is a finite scalar whose gradients reach every parameter."""
    head, outputs, targets = head_and_outputs(case)
    loss = head.loss(outputs, targets)
    assert isinstance(loss, Tensor) and loss.dim() == 0, (
        f"{case.who()}: loss returned {getattr(loss, 'shape', type(loss).__name__)}, expected a "
        "scalar tensor"
    )
    finite(case, "the loss", loss)
    backward(case, head, loss, "the loss")


def check_head_predict_and_metrics(case: Case) -> None:
    """``predict`` keeps one row per sample; every metric updates and computes finite values."""
    from torchmetrics import Metric

    head, outputs, targets = head_and_outputs(case)
    with torch.no_grad():
        predicted = head.predict(outputs)
    assert predicted.shape[0] == BATCH, (
        f"{case.who()}: predict gave shape {tuple(predicted.shape)}, expected {BATCH} rows"
    )
    metrics = head.metrics()
    assert isinstance(metrics, dict), f"{case.who()}: metrics() returned {type(metrics).__name__}"
    for name, metric in metrics.items():
        assert isinstance(metric, Metric), (
            f"{case.who()}: metric {name!r} is a {type(metric).__name__}, not a torchmetrics Metric"
        )
        metric.update(predicted, targets)
        value = metric.compute()
        finite(case, f"metric {name!r}", torch.as_tensor(value, dtype=torch.float32))


def check_head_task(case: Case) -> None:
    """``task_class()`` gives the :class:`mmplug.Task` named by ``task``, which reads labels
    and names the head's predictions."""
    from mmplug.model.tasks import Task

    head = build(case, Head, input_dim=HEAD_INPUT_DIM)
    try:
        task = head.task_class()
    except Exception as exc:
        raise AssertionError(
            f"{case.who()}: task_class() raised {type(exc).__name__}: {exc}"
        ) from exc
    assert isinstance(task, type) and issubclass(task, Task), (
        f"{case.who()}: task_class() returned {task!r}, not a subclass of mmplug.Task"
    )
    assert task.name == head.task, (
        f"{case.who()}: task_class() is task {task.name!r}, but the head's task is {head.task!r}"
    )
    for metric in head.metrics():
        assert task.direction(metric) in ("min", "max"), (
            f"{case.who()}: {task.__name__}.direction({metric!r}) is neither 'min' nor 'max'"
        )
