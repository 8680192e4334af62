"""What a run tells its user (mmplug.training.progress): log lines and the plot."""

from __future__ import annotations

from mmplug.training.progress import format_metrics, history_figure


def test_metrics_read_with_four_decimals_and_seconds_as_seconds() -> None:
    line = format_metrics(
        {"step": 12, "train_loss": 0.41234, "val_accuracy": 0.9, "seconds": 120.36}
    )
    assert line == "step 12  train_loss 0.4123  val_accuracy 0.9000  120.4 s"


LINES = [
    {"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5, "val_macro_f1": 0.4},
    {"epoch": 2, "train_loss": 0.7, "val_loss": 0.9, "val_accuracy": 0.7, "val_macro_f1": 0.6},
]


def _labels(axes: object) -> dict[str, float]:
    return {line.get_label(): line.get_linewidth() for line in axes.get_lines()}  # type: ignore[attr-defined]


def test_the_plot_shows_losses_then_every_validation_metric_with_the_monitored_one_marked() -> None:
    losses, metrics = history_figure(LINES, "val_accuracy").axes
    assert set(_labels(losses)) == {"train_loss", "val_loss"}
    drawn = _labels(metrics)
    assert set(drawn) == {"val_accuracy (monitored)", "val_macro_f1"}
    assert drawn["val_accuracy (monitored)"] > drawn["val_macro_f1"]
    _, metrics = history_figure(LINES, "val_loss").axes
    assert set(_labels(metrics)) == {"val_accuracy", "val_macro_f1"}  # the loss stays left
    assert "val_loss (monitored)" in _labels(history_figure(LINES, "val_loss").axes[0])


def test_a_run_without_validation_says_so() -> None:
    lines = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    losses, metrics = history_figure(lines, "train_loss").axes
    assert set(_labels(losses)) == {"train_loss (monitored)"}
    assert metrics.get_title() == "no validation metrics (no data.val)"
