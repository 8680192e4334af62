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
from typing import TYPE_CHECKING, Any, TextIO

from mmplug.files import staged_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Reporter:
    """Log lines and progress bars.

    Args:
        quiet: print nothing.
        stream: where log lines go (default: stdout).
        bars: show progress bars; default: when stderr is a terminal.
        bar_stream: where bars are drawn (default: stderr), as on a terminal.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        bars: bool | None = None,
        bar_stream: TextIO | None = None,
    ) -> None:
        self.quiet = quiet
        self.stream = stream
        self.bars = (not quiet and sys.stderr.isatty()) if bars is None else bars
        self.bar_stream = bar_stream

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream or sys.stdout, flush=True)

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield ``advance(**fields)``: one step forward; fields (e.g. ``loss``) are shown."""
        if not self.bars:
            yield lambda **fields: None
            return
        from rich.console import Console
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
        # stderr, so that stdout carries only the log lines (and --quiet's run directory)
        console = Console(file=self.bar_stream or sys.stderr, force_terminal=True)
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(description, total=total, status="")

            def advance(**fields: float) -> None:
                status = "  ".join(f"{k} {v:.4f}" for k, v in fields.items())
                progress.update(task, advance=1, status=status)

            yield advance


def format_metrics(values: dict[str, Any]) -> str:
    """``train_loss 0.4123  val_accuracy 0.9100  12.3 s`` (ints as they are)."""
    parts = []
    for key, value in values.items():
        if key == "seconds":
            parts.append(f"{value:.1f} s")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


def plot_history(lines: Sequence[dict[str, Any]], monitor: str, path: Path) -> None:
    """Write :func:`history_figure` as a PNG (atomically)."""
    figure = history_figure(lines, monitor)
    with staged_file(path) as staging:
        figure.savefig(staging, format="png", dpi=100)


def history_figure(lines: Sequence[dict[str, Any]], monitor: str) -> Figure:
    """The run per epoch: the losses on the left; in the middle the validation metrics, the
    monitored one (which picks ``best/``) drawn heavier and named so; on the right, where the
    run measured it (``train.reliance``), the monitored metric with each modality blanked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [line["epoch"] for line in lines]
    blanked = {k for line in lines for k in line if k.startswith("val_without_")}
    figure = Figure(figsize=(15 if blanked else 10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    panels = list(figure.subplots(1, 3 if blanked else 2))
    losses, metrics = panels[:2]
    for key in sorted({k for line in lines for k in line if k.startswith("train_loss")}):
        _curve(losses, epochs, lines, key, monitored=key == monitor)
    for key in sorted({k for line in lines for k in line if k.startswith("val_loss")}):
        _curve(losses, epochs, lines, key, monitored=key == monitor)
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    names = sorted(
        {
            k
            for line in lines
            for k in line
            if k.startswith("val_") and not k.startswith("val_loss") and k not in blanked
        }
    )
    for key in names:
        _curve(metrics, epochs, lines, key, monitored=key == monitor)
    title = "validation metrics" if names else "no validation metrics (no data.val)"
    metrics.set(xlabel="epoch", title=title)
    if blanked:
        metric = monitor.removeprefix("val_") if monitor.startswith("val_") else "loss"
        reliance = panels[2]
        _curve(reliance, epochs, lines, f"val_{metric}", monitored=True)
        # every blanked pass records its loss: val_without_<key>_loss names the keys
        keys = sorted(
            k[len("val_without_") : -len("_loss")] for k in blanked if k.endswith("_loss")
        )
        for key in keys:
            _curve(reliance, epochs, lines, f"val_without_{key}_{metric}", monitored=False)
        reliance.set(xlabel="epoch", title=f"val_{metric} with each modality blanked")
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.get_lines():
            axes.legend()
    return figure


def _curve(
    axes: Any, epochs: list[int], lines: Sequence[dict[str, Any]], key: str, *, monitored: bool
) -> None:
    values = [line.get(key, math.nan) for line in lines]
    if not any(math.isfinite(v) for v in values):
        return
    label = f"{key} (monitored)" if monitored else key
    axes.plot(epochs, values, marker="o", label=label, linewidth=2.5 if monitored else 1.2)
