"""Training, resuming, evaluating and predicting with the toy plugin's tiny components."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from training_helpers import (
    CLASSES,
    metric_lines,
    start_training,
    toy_config,
    toy_data,
    toy_rows,
    write_rows,
)

import mmplug
from mmplug import ConfigError, DataError, MmplugError
from mmplug.errors import MmplugWarning
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import load_plugins
from mmplug.training.progress import Reporter

QUIET = Reporter(quiet=True)


def classes_of(run: Path) -> list[str]:
    """The class names a run saved in labels.json."""
    return json.loads((run / "labels.json").read_text())["classes"]


def run_train(config: dict[str, Any], out: Path, host: PluginHost, **kwargs: Any) -> Path:
    kwargs.setdefault("reporter", QUIET)
    return mmplug.train(config, out=out, registry=host.registry, **kwargs)


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    return toy_data(tmp_path / "data")


def test_two_epochs_write_a_complete_run_directory(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)

    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "labels.json", "metrics.jsonl", "plugins.json", "results.json"} <= names
    assert {"best", "last", "training.png"} <= names
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["head"]["num_classes"] == 3  # filled from the data
    assert config["model"]["fusion"]["name"] == "toy-plugin:mean"
    assert config["train"]["warmup"] == 0.1  # defaults written out
    assert Path(config["data"]["train"]).is_absolute()
    assert json.loads((run / "labels.json").read_text()) == {
        "task": "classification",
        "classes": list(CLASSES),
    }
    plugins = json.loads((run / "plugins.json").read_text())["distributions"]
    assert plugins == {"mmplug": mmplug.__version__, "toy-plugin": "1.0"}
    lines = metric_lines(run)
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_auroc"} <= set(lines[0])
    assert lines[-1]["step"] == 2 * 6  # 48 rows in batches of 8
    # weights and optimizer state are safetensors; nothing is pickled
    last = {p.name for p in (run / "last").rglob("*") if p.is_file()}
    assert last == {
        "config.yaml",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer.json",
        "checksums.json",
    }
    assert "optimizer.safetensors" not in {p.name for p in (run / "best").iterdir()}
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 2 and results["skipped"] == 0
    assert 0 <= results["test"]["accuracy"] <= 1 and results["test"]["count"] == 24
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_learns_the_toy_task(tmp_path: Path, toy_host: PluginHost) -> None:
    data = toy_data(tmp_path / "data", train=96, val=48, test=48)
    run = run_train(toy_config(data, epochs=8), tmp_path / "run", toy_host)
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["accuracy"] >= 0.9


def test_same_seed_same_metrics_other_seed_other_metrics(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    config = toy_config(data)
    config["model"]["modality_dropout"] = 0.3
    first = metric_lines(run_train(config, tmp_path / "a", toy_host))
    second = metric_lines(run_train(config, tmp_path / "b", toy_host))
    config["train"]["seed"] = 1
    other = metric_lines(run_train(config, tmp_path / "c", toy_host))
    assert first == second
    assert first != other


class Crash(Exception):
    pass


def test_resume_after_a_crash_replays_an_uninterrupted_run(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmplug.training.trainer import Trainer

    config = toy_config(data, epochs=4)
    config["model"]["modality_dropout"] = 0.3
    uninterrupted = run_train(config, tmp_path / "full", toy_host)

    save = Trainer._save

    def crash_after_epoch_2(self: Trainer, name: str, *, optimizer: bool) -> None:
        save(self, name, optimizer=optimizer)
        if name == "last" and self.state.epoch == 2:
            raise Crash

    monkeypatch.setattr(Trainer, "_save", crash_after_epoch_2)
    with pytest.raises(Crash):
        run_train(config, tmp_path / "crashed", toy_host)
    monkeypatch.undo()
    assert [line["epoch"] for line in metric_lines(tmp_path / "crashed")] == [1, 2]

    resumed = mmplug.train(resume=tmp_path / "crashed", registry=toy_host.registry, reporter=QUIET)
    assert metric_lines(resumed) == metric_lines(uninterrupted)
    best = json.loads((resumed / "results.json").read_text())
    assert best["test"] == json.loads((uninterrupted / "results.json").read_text())["test"]


def test_a_run_killed_between_checkpoints_resumes(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    """SIGKILL at a random moment after the first checkpoint; the resumed run ends as one
    that was never interrupted."""
    # Enough epochs that the kill lands mid-run (toy epochs take tens of milliseconds); a
    # kill after the last epoch, while the test split runs, must resume just as well.
    config = toy_config(data, epochs=40)
    out = tmp_path / "killed"
    child = start_training(config, out)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last" / "trainer.json").exists():
            assert child.poll() is None, "the child ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert 1 <= len(metric_lines(out)) <= 40

    resumed = mmplug.train(resume=out, registry=toy_host.registry, reporter=QUIET)
    uninterrupted = run_train(config, tmp_path / "full", toy_host)
    assert metric_lines(resumed) == metric_lines(uninterrupted)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".lock"]  # no leftovers


def test_resume_may_change_train_settings_but_not_the_model(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    config = toy_config(data)
    run = run_train(config, tmp_path / "run", toy_host)

    def resume(*overrides: str, given: dict[str, Any] | None = None) -> Path:
        return mmplug.train(
            given, list(overrides), resume=run, registry=toy_host.registry, reporter=QUIET
        )

    resume("train.epochs=3", "train.lr=0.5", given=config)
    assert [line["epoch"] for line in metric_lines(run)] == [1, 2, 3]
    groups = json.loads((run / "last" / "trainer.json").read_text())["optimizer"]["param_groups"]
    assert {group["initial_lr"] for group in groups} == {0.5}  # the new peak, not the saved one

    with pytest.raises(ConfigError, match=r"model: differs from the run's"):
        resume("model.fusion.dim=8", given=config)
    with pytest.raises(ConfigError, match=r"data: differs from the run's"):
        resume(f"data.train={data['val']}")  # the run's own config, overridden
    with pytest.raises(ConfigError, match=r"train\.batch_size: differs from the run's"):
        resume("train.batch_size=4")


def test_a_run_stopped_early_continues_when_patience_is_lifted(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    config = toy_config(data, epochs=6, patience=1, monitor_mode="max")
    run = run_train(config, tmp_path / "run", toy_host)
    assert json.loads((run / "results.json").read_text())["stopped_early"]
    mmplug.train(
        resume=run, overrides=["train.patience=null"], registry=toy_host.registry, reporter=QUIET
    )
    assert [line["epoch"] for line in metric_lines(run)] == [1, 2, 3, 4, 5, 6]


def test_a_start_that_failed_before_any_checkpoint_can_be_run_again(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmplug.training.trainer import Trainer

    def crash(self: Trainer, epoch: int) -> None:
        raise Crash

    monkeypatch.setattr(Trainer, "_epoch", crash)
    with pytest.raises(Crash):
        run_train(toy_config(data), tmp_path / "run", toy_host)
    monkeypatch.undo()
    assert (tmp_path / "run" / "config.yaml").is_file()
    run_train(toy_config(data), tmp_path / "run", toy_host)  # the same --out again
    assert len(metric_lines(tmp_path / "run")) == 2

    monkeypatch.setattr(Trainer, "_epoch", crash)
    with pytest.raises(Crash):
        run_train(toy_config(data), tmp_path / "other", toy_host)
    monkeypatch.undo()
    mmplug.train(resume=tmp_path / "other", registry=toy_host.registry, reporter=QUIET)
    assert len(metric_lines(tmp_path / "other")) == 2


def test_an_existing_run_directory_is_not_overwritten(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    with pytest.raises(MmplugError, match=r"already exists and is not empty.*--resume"):
        run_train(toy_config(data), run, toy_host)


# -- data ---------------------------------------------------------------------------------


def test_absent_values_train_and_require_all_names_the_row(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    rows = toy_rows(16, 0)
    rows[3]["word"] = None
    del rows[4]["word"]
    rows[5]["stats"] = None
    data["train"] = str(write_rows(tmp_path / "absent.jsonl", rows))
    run_train(toy_config(data, epochs=1), tmp_path / "run", toy_host)

    data["require_all"] = True  # type: ignore[assignment]
    with pytest.raises(DataError, match=r"absent\.jsonl row [456], column '\w+': no value"):
        run_train(toy_config(data, epochs=1), tmp_path / "strict", toy_host)


def test_an_unreadable_row_names_manifest_row_and_column(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    rows = toy_rows(16, 0)
    rows[6]["stats"] = "1,two,3,4"
    data["train"] = str(write_rows(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError) as caught:
        run_train(toy_config(data, epochs=1), tmp_path / "run", toy_host)
    message = str(caught.value)
    assert "bad.jsonl row 7, column 'stats'" in message
    assert "can't read '1,two,3,4'" in message


def test_on_error_skip_counts_and_lists_the_rows(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    rows = toy_rows(16, 0)
    rows[6]["stats"] = "1,two,3,4"
    rows[9]["label"] = "zebra"
    data["train"] = str(write_rows(tmp_path / "bad.jsonl", rows))
    data["on_error"] = "skip"
    data["classes"] = list(CLASSES)  # type: ignore[assignment]
    run = run_train(toy_config(data), tmp_path / "run", toy_host)

    skipped = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert [row["row"] for row in skipped] == [7, 10]
    assert "'zebra' is not one of the classes" in skipped[1]["error"]
    results = json.loads((run / "results.json").read_text())
    assert results["skipped"] == 2


def test_unknown_column_stops_before_training_with_a_suggestion(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    data["columns"] = {"word": "wrd"}  # type: ignore[assignment]
    with pytest.raises(DataError, match=r"no column 'wrd' .*did you mean 'word'\?"):
        run_train(toy_config(data), tmp_path / "run", toy_host)
    assert not (tmp_path / "run").exists()

    data["columns"] = {"words": "word"}  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"data\.columns\.words: the model has no encoder"):
        run_train(toy_config(data), tmp_path / "run", toy_host)

    data["columns"] = {}  # type: ignore[assignment]
    data["label"] = "class"
    with pytest.raises(DataError, match=r"no column 'class' \(the label column, data\.label\)"):
        run_train(toy_config(data), tmp_path / "run", toy_host)


def test_an_unparsable_manifest_line_is_named(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"stats": [1, 2, 3, 4], "label": "ant"}\n\n{"stats": [1, 2\n')
    data["val"] = str(path)
    with pytest.raises(DataError, match=r"broken\.jsonl line 3: invalid JSON"):
        run_train(toy_config(data), tmp_path / "run", toy_host)


def test_csv_manifests_with_empty_cells(tmp_path: Path, toy_host: PluginHost) -> None:
    lines = ["stats,word,label"]
    for row in toy_rows(24, 0, absent_every=4):
        word = row["word"] or ""
        lines.append(f'"{",".join(map(str, row["stats"]))}",{word},{row["label"]}')
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    run = run_train(toy_config({"train": str(path)}, epochs=1), tmp_path / "run", toy_host)
    assert metric_lines(run)[0]["train_loss"] > 0


# -- labels -------------------------------------------------------------------------------


def test_label_mapping_round_trips_through_predictions(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    predictor = mmplug.load(run, registry=toy_host.registry)

    assert predictor.task.classes == tuple(CLASSES)
    [prediction] = predictor.predict({"stats": [4.0, 0.0, 0.0, 1.0], "word": "red"})
    assert prediction["label"] in CLASSES
    assert set(prediction["probabilities"]) == set(CLASSES)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    best = max(prediction["probabilities"], key=prediction["probabilities"].get)
    assert prediction["label"] == best


def test_numeric_labels_sort_naturally_and_classes_can_be_given(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    rows = toy_rows(24, 0)
    for row in rows:
        row["label"] = {"ant": 10, "bee": 9, "cat": 2}[row["label"]]
    data["train"] = str(write_rows(tmp_path / "numbers.jsonl", rows))
    data.pop("val"), data.pop("test")
    run = run_train(toy_config(data, epochs=1), tmp_path / "a", toy_host)
    assert classes_of(run) == ["2", "9", "10"]

    data["classes"] = ["10", "9", "2", "1"]  # type: ignore[assignment]
    run = run_train(toy_config(data, epochs=1), tmp_path / "b", toy_host)
    assert classes_of(run) == ["10", "9", "2", "1"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["head"]["num_classes"] == 4


def test_a_head_of_the_wrong_size_is_reported(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    config = toy_config(data)
    config["model"]["head"]["num_classes"] = 5
    with pytest.raises(ConfigError, match=r"model\.head: the head has 5 outputs but the data"):
        run_train(config, tmp_path / "run", toy_host)


def test_multilabel_and_regression(tmp_path: Path, toy_host: PluginHost) -> None:
    rows = toy_rows(32, 0)
    for index, row in enumerate(rows):
        row["tags"] = [row["label"], "x"] if index % 2 else [row["label"]]
        row["value"] = row["stats"][0] * 1.5
    path = write_rows(tmp_path / "train.jsonl", rows)
    config = toy_config({"train": str(path), "val": str(path), "label": "tags"}, epochs=1)
    config["model"]["head"] = {"name": "multilabel"}
    run = run_train(config, tmp_path / "multilabel", toy_host)
    assert classes_of(run) == ["ant", "bee", "cat", "x"]
    assert {"val_map", "val_f1"} <= set(metric_lines(run)[0])
    [prediction] = mmplug.load(run, registry=toy_host.registry).predict({"word": "red"})
    assert set(prediction) == {"labels", "probabilities"}

    config = toy_config({"train": str(path), "val": str(path), "label": "value"}, epochs=1)
    config["model"]["head"] = {"name": "regression"}
    config["train"]["monitor"] = "val_mae"
    run = run_train(config, tmp_path / "regression", toy_host)
    assert {"val_mae", "val_rmse", "val_r2"} <= set(metric_lines(run)[0])
    [prediction] = mmplug.load(run, registry=toy_host.registry).predict({"word": "red"})
    assert isinstance(prediction["value"], float)  # one target: a number, not a list


# -- the training loop --------------------------------------------------------------------


def test_accumulation_max_steps_and_early_stopping(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data, grad_accumulation=4), tmp_path / "accumulate", toy_host)
    assert [line["step"] for line in metric_lines(run)] == [2, 4]  # 6 batches -> 2 steps

    run = run_train(toy_config(data, epochs=10, max_steps=9), tmp_path / "steps", toy_host)
    assert [line["step"] for line in metric_lines(run)] == [6, 9]

    # val_loss falls, so with "max" it never improves after the first epoch
    config = toy_config(data, epochs=10, patience=2, monitor_mode="max")
    run = run_train(config, tmp_path / "patience", toy_host)
    results = json.loads((run / "results.json").read_text())
    assert results["stopped_early"] and results["epochs"] == 3 and results["best_epoch"] == 1


def test_unknown_monitor_and_device_are_config_errors(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    with pytest.raises(ConfigError, match=r"train\.monitor: unknown metric 'val_acc'"):
        run_train(toy_config(data, monitor="val_acc"), tmp_path / "a", toy_host)
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match=r"train\.device: can't use device 'cuda': CUDA is not avail"
        ):
            run_train(toy_config(data, device="cuda"), tmp_path / "b", toy_host)
    with pytest.raises(ConfigError, match=r"^invalid config: train\.lr: Input should be greater"):
        run_train(toy_config(data, lr=0), tmp_path / "c", toy_host)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32_but_not_as_fp32(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, precision: str
) -> None:
    exact = metric_lines(run_train(toy_config(data), tmp_path / "fp32", toy_host))
    mixed = metric_lines(
        run_train(toy_config(data, precision=precision), tmp_path / precision, toy_host)
    )
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(exact, mixed, strict=True)]
    assert any(a != b for a, b in losses)  # the half-precision forward pass did run
    assert all(abs(a - b) < 0.05 * a for a, b in losses)  # and learned the same thing


def test_encoder_learning_rate_and_no_decay_groups(toy_host: PluginHost) -> None:
    from mmplug.model.sections import TrainConfig
    from mmplug.training.optim import param_groups, warmup_cosine

    config = toy_config({})
    config["model"]["head"]["num_classes"] = 3
    model = mmplug.build_model({"model": config["model"]}, registry=toy_host.registry)
    groups = param_groups(model, TrainConfig(lr=0.1, encoder_lr=0.01, weight_decay=0.5))
    by_name = {group["name"]: group for group in groups}
    for key in ("stats", "word"):
        group = by_name[f"encoders.{key}"]
        assert group["lr"] == 0.01 and group["weight_decay"] == 0.5
    assert by_name["fusion+head (no decay)"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in by_name["fusion+head (no decay)"]["params"])

    factor = warmup_cosine(100, 0.1, 0.1)
    assert factor(0) == pytest.approx(1 / 11)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.55)
    assert factor(100) == pytest.approx(0.1)


# -- using a run --------------------------------------------------------------------------


def test_predict_and_evaluate_a_manifest(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    predictor = mmplug.load(run, registry=toy_host.registry)

    evaluation = predictor.evaluate(data["test"])
    results = json.loads((run / "results.json").read_text())
    assert evaluation.metrics["accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert sum(map(sum, evaluation.confusion or [])) == 24

    lines = list(predictor.predict_manifest(data["test"]))
    assert [line["row"] for line in lines] == list(range(1, 25))
    assert all(line["label"] in CLASSES for line in lines)


def test_loading_needs_the_plugins_the_run_used(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, toy_plugin: Any
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    core_only = load_plugins(entry_points=False)
    with pytest.raises(
        MmplugError,
        match=r"toy-plugin 1\.0, which is not installed.*"
        r"pip install toy-plugin",
    ):
        mmplug.load(run, registry=core_only.registry)

    newer = load_plugins(entry_points=False)
    newer.add(toy_plugin, name="toy", distribution="toy-plugin", version="2.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mmplug.load(run, registry=newer.registry)
    [warning] = [w for w in caught if issubclass(w.category, MmplugWarning)]
    assert "toy-plugin 1.0; 2.0 is installed" in str(warning.message)


def test_load_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(MmplugError, match="is not a run directory"):
        mmplug.load(tmp_path)


def test_progress_bars_go_to_their_stream_and_log_lines_to_stdout(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = io.StringIO()
    reporter = Reporter(bars=True, bar_stream=bars)
    run = run_train(toy_config(data), tmp_path / "bars", toy_host, reporter=reporter)
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1/2  step 6  train_loss \d\.\d{4}  .*  \d+\.\d s$", out, re.M)
    assert f"done: {run}" in out
    drawn = bars.getvalue()
    assert "epoch 1/2" in drawn and "6/6" in drawn and "loss 1." in drawn  # bar, count, status
    assert "epoch 1/2" not in out.replace("epoch 1/2  step", "")  # no bar on stdout
    quiet = io.StringIO()
    run_train(toy_config(data), tmp_path / "plain", toy_host, reporter=Reporter(bar_stream=quiet))
    assert quiet.getvalue() == ""  # not a terminal: no bars by default


# -- edge cases ---------------------------------------------------------------------------


def test_integer_labels_from_zero_and_missing_labels_with_skip(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    rows = toy_rows(24, 0)
    for row in rows:
        row["label"] = CLASSES.index(row["label"])  # 0, 1, 2
    rows[3]["label"] = None
    path = write_rows(tmp_path / "ints.jsonl", rows)
    config = toy_config({"train": str(path), "on_error": "skip"}, epochs=1)
    run = run_train(config, tmp_path / "run", toy_host)
    assert classes_of(run) == ["0", "1", "2"]
    [skipped] = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert skipped["row"] == 4 and "the label is missing" in skipped["error"]

    config["data"]["on_error"] = "raise"
    with pytest.raises(DataError, match=r"ints\.jsonl row 4, column 'label': the label is miss"):
        run_train(config, tmp_path / "strict", toy_host)


def test_fp16_survives_an_accumulation_group_that_was_all_skipped(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    rows = toy_rows(6, 0)
    rows[2]["stats"] = "not numbers"
    path = write_rows(tmp_path / "train.jsonl", rows)
    config = toy_config({"train": str(path), "on_error": "skip"}, precision="fp16", batch_size=1)
    run = run_train(config, tmp_path / "run", toy_host)
    assert [line["step"] for line in metric_lines(run)] == [5, 10]  # 6 batches, 1 empty


def test_empty_and_unreadable_splits_are_errors(tmp_path: Path, toy_host: PluginHost) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("stats,word,label\n")
    with pytest.raises(DataError, match=r"empty\.csv has no rows"):
        run_train(toy_config({"train": str(empty)}), tmp_path / "a", toy_host)

    rows = toy_rows(4, 0)
    for row in rows:
        row["stats"] = "x"
    path = write_rows(tmp_path / "bad.jsonl", rows)
    config = toy_config({"train": str(path), "on_error": "skip"})
    with pytest.raises(MmplugError, match=r"no row of .*bad\.jsonl could be read in epoch 1"):
        run_train(config, tmp_path / "b", toy_host)


def test_regression_targets_are_checked_and_r2_of_one_row_is_nan(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    rows = toy_rows(16, 0)
    for row in rows:
        row["value"] = [1.0, 2.0]
    rows[5]["value"] = [1.0]
    train = write_rows(tmp_path / "train.jsonl", rows)
    config = toy_config({"train": str(train), "label": "value"}, epochs=1)
    config["model"]["head"] = {"name": "regression", "num_targets": 2}
    with pytest.raises(DataError, match=r"train\.jsonl row 6, column 'value': expected 2 num"):
        run_train(config, tmp_path / "a", toy_host)

    rows[5]["value"] = [0.5, 1.5]
    write_rows(train, rows)
    val = write_rows(tmp_path / "val.jsonl", rows[:1])
    config["data"]["val"] = str(val)
    run = run_train(config, tmp_path / "b", toy_host)
    [line] = metric_lines(run)
    assert line["val_r2"] != line["val_r2"] and line["val_mae"] >= 0  # NaN: one sample


def test_row_errors_from_workers_are_the_rows_own_messages(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    rows = toy_rows(16, 0)
    rows[6]["stats"] = "1,two,3,4"
    data["train"] = str(write_rows(tmp_path / "bad.jsonl", rows))
    data["num_workers"] = 1  # type: ignore[assignment]
    with pytest.raises(DataError) as caught:
        run_train(toy_config(data), tmp_path / "run", toy_host)
    assert str(caught.value).startswith(f"{tmp_path / 'bad.jsonl'} row 7, column 'stats'")
    assert "Traceback" not in str(caught.value)


def test_manifests_with_a_byte_order_mark_and_val_without_a_column(
    tmp_path: Path, toy_host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["stats,word,label"] + [
        f'"{",".join(map(str, row["stats"]))}",{row["word"]},{row["label"]}'
        for row in toy_rows(16, 0)
    ]
    train = tmp_path / "train.csv"
    train.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    val = write_rows(tmp_path / "val.jsonl", [{"stats": [0, 0, 0, 1], "label": "ant"}] * 4)
    config = toy_config({"train": str(train), "val": str(val)}, epochs=1)
    run_train(config, tmp_path / "run", toy_host, reporter=Reporter())
    assert "val.jsonl has no column 'word'; absent in every row" in capsys.readouterr().out


def test_yaml_booleans_as_class_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="quote class names"):
        mmplug.load_config(
            {
                "model": toy_config({})["model"],
                "data": {"train": "t.jsonl", "classes": [True, False]},
            }
        )


def test_run_files_are_readable_by_others(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    umask = os.umask(0)
    os.umask(umask)
    assert (run / "config.yaml").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (run / "best").stat().st_mode & 0o777 == 0o777 & ~umask


def test_best_shares_the_weights_file_of_last_when_they_hold_the_same_weights(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data, epochs=3, monitor="train_loss"), tmp_path / "run", toy_host)
    results = json.loads((run / "results.json").read_text())
    best, last = run / "best" / "model.safetensors", run / "last" / "model.safetensors"
    assert results["best_epoch"] == 3  # the training loss went down every epoch
    assert best.stat().st_ino == last.stat().st_ino  # one file, two names

    # one more epoch that is not better: last/ is new, best/ keeps the epoch-3 weights
    before = best.read_bytes()
    resumed = mmplug.train(
        resume=run,
        overrides=["train.epochs=4", "train.lr=1e-9"],
        registry=toy_host.registry,
        reporter=QUIET,
    )
    if json.loads((resumed / "results.json").read_text())["best_epoch"] == 3:
        assert best.stat().st_ino != last.stat().st_ino and best.read_bytes() == before
    else:  # epoch 4 was better still: best/ was saved from it, linked again
        assert best.stat().st_ino == last.stat().st_ino and best.read_bytes() != before


class _Votes(mmplug.Task):
    """A plugin's own task: a cell is 'yes'/'no' votes like 'yyn'; the target their share."""

    name = "votes"
    parsed: ClassVar[list[str]] = []

    @classmethod
    def from_labels(cls, names: Any, *, classes: Any = None, separator: str = "|") -> _Votes:
        return cls()

    def encode(self, cell: Any) -> torch.Tensor:
        _Votes.parsed.append(cell)
        if not isinstance(cell, str) or set(cell) - {"y", "n"}:
            raise mmplug.DataError(f"votes: {cell!r} is not a string of y and n")
        return torch.tensor(cell.count("y") / len(cell))

    def describe(self, prediction: torch.Tensor) -> dict[str, Any]:
        return {"share_of_yes": round(float(prediction), 3)}

    def to_json(self) -> dict[str, Any]:
        return {"task": self.name}

    @classmethod
    def from_json(cls, data: Any) -> _Votes:
        return cls()


def test_a_plugin_head_brings_its_own_task(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    from mmplug.model.heads import RegressionHead

    class VotesHead(RegressionHead):
        task = "votes"

        @classmethod
        def task_class(cls) -> type[mmplug.Task]:
            return _Votes

        def predict(self, outputs: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(outputs).squeeze(-1)

    from .conftest import Plugin

    toy_host.add(Plugin(register_heads=[(("votes", VotesHead), {})]), name="votes")
    section = {}
    for split in ("train", "val"):
        rows = [json.loads(line) for line in Path(data[split]).read_text().splitlines()]
        for index, row in enumerate(rows):
            row["label"] = "yyn" if index % 2 else "ny"
        section[split] = str(write_rows(tmp_path / f"{split}.jsonl", rows))
    config = toy_config(section)
    config["model"]["head"] = {"name": "votes"}
    run = run_train(config, tmp_path / "run", toy_host)
    assert json.loads((run / "labels.json").read_text()) == {"task": "votes"}
    assert "yyn" in _Votes.parsed
    predictor = mmplug.load(run, registry=toy_host.registry)
    [answer] = predictor.predict({"stats": [0.0, 0.0, 0.0, 1.0]})
    assert set(answer) == {"share_of_yes"} and 0 <= answer["share_of_yes"] <= 1


USING_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import importlib.util
spec = importlib.util.spec_from_file_location("toy_plugin", {toy!r})
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
import mmplug
from conftest import make_toy_host
predictor = mmplug.load({run!r}, registry=make_toy_host(toy).registry)
predictor.predict({{"stats": [1.0, 0.0, 0.0, 1.0], "word": "red"}})
list(predictor.predict_manifest({manifest!r}))
predictor.evaluate({manifest!r})
print(sorted(m for m in sys.modules if m.startswith("mmplug.training")))
"""


def test_using_a_trained_run_never_imports_the_training_stack(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = run_train(toy_config(data), tmp_path / "run", toy_host)
    root = Path(__file__).resolve().parent
    script = USING_CHILD.format(
        tests=str(root),
        toy=str(root.parent / "examples" / "toy_plugin.py"),
        run=str(run),
        manifest=data["test"],
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_an_unknown_monitor_is_an_error_with_or_without_a_val_manifest(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    no_val = {**data, "val": None}
    with pytest.raises(
        ConfigError, match=r"unknown metric 'trian_loss'; did you mean 'train_loss'"
    ):
        run_train(toy_config(no_val, monitor="trian_loss"), tmp_path / "a", toy_host)
    with pytest.raises(ConfigError, match=r"'val_accuracy' needs a val manifest"):
        run_train(toy_config(no_val, monitor="val_accuracy"), tmp_path / "b", toy_host)


def test_class_names_must_be_distinct_and_a_nan_label_is_missing(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    with pytest.raises(
        ConfigError, match=r"data\.classes: class names must be distinct; repeated: ant"
    ):
        run_train(toy_config({**data, "classes": ["ant", "bee", "ant"]}), tmp_path / "a", toy_host)
    rows = toy_rows(24, seed=1)
    rows[2]["label"] = float("nan")  # pandas writes missing values as NaN
    section = {"train": str(write_rows(tmp_path / "nan.jsonl", rows)), "on_error": "skip"}
    run = run_train(toy_config(section, epochs=1), tmp_path / "run", toy_host)
    assert classes_of(run) == list(CLASSES)
    [skipped] = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert skipped["row"] == 3 and "the label is missing" in skipped["error"]
