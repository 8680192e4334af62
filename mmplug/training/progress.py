"""What a run tells its user: progress bars on a terminal, log lines elsewhere, and a plot.

On a terminal each epoch shows a ``rich`` progress bar (on stderr); when output goes to a file
or a pipe (CI logs) only the plain lines are written, one per epoch, so logs stay readable.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mmplug.files import staged_file


class Reporter:
    """Log lines and progress bars.

    Args:
        quiet: print nothing.
        stream: where log lines go (default: stdout).
        bars: show progress bars; default: when stderr is a terminal.
    """

    def __init__(
        self, *, quiet: bool = False, stream: TextIO | None = None, bars: bool | None = None
    ) -> None:
        self.quiet = quiet
        self.stream = stream
        self.bars = (not quiet and sys.stderr.isatty()) if bars is None else bars

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream or sys.stdout, flush=True)

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield ``advance(**fields)``: one step forward; fields (e.g. ``loss``) are shown."""
        if not self.bars:
            yield lambda **fields: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(description, total=total, status="")

            def advance(**fields: float) -> None:
                status = "  ".join(f"{k} {v:.4f}" for k, v in fields.items())
                progress.update(task, advance=1, status=status)

            yield advance


def format_metrics(values: dict[str, Any]) -> str:
    """``train_loss 0.4123  val_accuracy 0.9100`` (ints as they are)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


def plot_history(lines: Sequence[dict[str, Any]], monitor: str, path: Path) -> None:
    """Write a PNG: losses per epoch on the left, ``monitor`` per epoch on the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [line["epoch"] for line in lines]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    losses, watched = figure.subplots(1, 2)
    for key in ("train_loss", "val_loss"):
        values = [line.get(key, math.nan) for line in lines]
        if any(math.isfinite(v) for v in values):
            losses.plot(epochs, values, marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    losses.legend()
    watched.plot(epochs, [line.get(monitor, math.nan) for line in lines], marker="o")
    watched.set(xlabel="epoch", ylabel=monitor, title=monitor)
    for axes in (losses, watched):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    with staged_file(path) as staging:
        figure.savefig(staging, format="png", dpi=100)
