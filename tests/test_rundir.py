"""A run directory: opening one, its checkpoints, labels, plugins and metrics files."""

from __future__ import annotations

import json
import platform
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from mmplug import MmplugError
from mmplug.errors import MmplugWarning
from mmplug.model.heads import ClassificationHead
from mmplug.model.tasks import ClassificationTask
from mmplug.plugins.host import PluginHost
from mmplug.runs.rundir import RunDir


def make_run(path: Path) -> RunDir:
    """The two files that make a folder a run directory."""
    run = RunDir(path)
    run.write_config({"model": {"head": {"name": "classification"}}})
    run.write_labels(ClassificationTask(("ant", "bee", "cat")))
    return run


# -- opening ------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MmplugError, match=r"is not a run directory \(no config\.yaml and labels"):
        RunDir.open(tmp_path)
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(MmplugError, match="is not a run directory"):
        RunDir.open(tmp_path)  # labels.json is missing too
    with pytest.raises(MmplugError, match=re.escape(str(tmp_path / "missing"))):
        RunDir.open(tmp_path / "missing")


def test_a_run_opens(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    run = RunDir.open(str(tmp_path / "run"))
    assert run.path == tmp_path / "run"
    # saved before model.unimodal_heads existed (as make_run writes it): the model had none
    assert run.config_data() == {
        "model": {"head": {"name": "classification"}, "unimodal_heads": False}
    }


def test_no_checkpoint_yet_names_the_folder(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    with pytest.raises(
        MmplugError, match=re.escape(f"{tmp_path / 'run'} has no best/ checkpoint yet")
    ):
        run.checkpoint()
    with pytest.raises(MmplugError, match=r"has no last/ checkpoint yet"):
        run.checkpoint("last")


def test_checkpoints_are_found(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run.path / "best").mkdir()
    assert run.checkpoint() == run.path / "best"
    assert run.checkpoint("best") == run.path / "best"
    with pytest.raises(MmplugError, match="no last/"):
        run.checkpoint("last")
    (run.path / ".last.old").mkdir()  # a process killed while replacing last/
    assert run.checkpoint("last") == run.path / ".last.old"
    (run.path / "last").mkdir()
    assert run.checkpoint("last") == run.path / "last"


# -- labels -------------------------------------------------------------------------------


def test_labels_round_trip_through_labels_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    task = ClassificationTask(("zebra", "ant", "10", "9"))
    run.write_labels(task)
    assert json.loads((tmp_path / "labels.json").read_text()) == {
        "task": "classification",
        "classes": ["zebra", "ant", "10", "9"],  # output order, not sorted
    }
    head = ClassificationHead(input_dim=4, num_classes=4)
    read = run.task(head)
    assert isinstance(read, ClassificationTask)
    assert read == task
    probabilities = torch.tensor([0.1, 0.2, 0.6, 0.1])
    assert read.describe(probabilities)["label"] == "10"


def test_labels_that_do_not_fit_the_head_are_an_error_at_load(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_labels(ClassificationTask(("ant", "bee", "cat")))
    with pytest.raises(MmplugError, match=r"labels\.json does not fit the model's head \(2 outp"):
        run.task(ClassificationHead(input_dim=4, num_classes=2))


# -- plugins ------------------------------------------------------------------------------


def test_write_plugins(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_plugins({"mmplug": "0.1.0", "toy-plugin": "1.0"})
    assert json.loads((tmp_path / "plugins.json").read_text()) == {
        "distributions": {"mmplug": "0.1.0", "toy-plugin": "1.0"},
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def installed(toy_host: PluginHost) -> dict[str, str]:
    return {spec.distribution: spec.version for spec in toy_host.registry.components()}


def test_plugins_that_match_pass_silently(tmp_path: Path, toy_host: PluginHost) -> None:
    run = RunDir(tmp_path)
    run.write_plugins(installed(toy_host))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.check_plugins(toy_host.registry)


def test_no_plugins_json_is_not_checked(tmp_path: Path, toy_host: PluginHost) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunDir(tmp_path).check_plugins(toy_host.registry)


def test_a_distribution_that_is_not_installed_is_named(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    run = RunDir(tmp_path)
    run.write_plugins({**installed(toy_host), "mmplug-audio": "0.3"})
    with pytest.raises(MmplugError) as caught:
        run.check_plugins(toy_host.registry)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "mmplug-audio 0.3, which is not installed" in message
    assert message.endswith("pip install mmplug-audio")
    assert "toy-plugin" not in message


def test_several_missing_distributions_are_all_named(tmp_path: Path, toy_host: PluginHost) -> None:
    run = RunDir(tmp_path)
    run.write_plugins({"mmplug-video": "2.0", "mmplug-audio": "0.3", "toy-plugin": "1.0"})
    with pytest.raises(MmplugError, match=r"mmplug-audio 0\.3, mmplug-video 2\.0, which are not"):
        run.check_plugins(toy_host.registry)
    with pytest.raises(MmplugError, match=r"pip install mmplug-audio mmplug-video$"):
        run.check_plugins(toy_host.registry)


def test_another_version_is_a_warning(tmp_path: Path, toy_host: PluginHost) -> None:
    run = RunDir(tmp_path)
    run.write_plugins({**installed(toy_host), "toy-plugin": "0.9"})
    with pytest.warns(MmplugWarning) as caught:
        run.check_plugins(toy_host.registry)
    [warning] = caught.list
    assert "was trained with toy-plugin 0.9; 1.0 is installed" in str(warning.message)


# -- metrics and json files ---------------------------------------------------------------


def test_metrics_of_a_run_without_any(tmp_path: Path) -> None:
    assert RunDir(tmp_path).metrics() == []


def test_metrics_lines_oldest_first(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    lines: list[dict[str, Any]] = [
        {"epoch": 1, "val_loss": 0.9},
        {"epoch": 2, "val_loss": 0.5, "note": "é"},
    ]
    run.write_jsonl("metrics.jsonl", lines)
    text = (run.path / "metrics.jsonl").read_text()
    assert text.splitlines() == [json.dumps(line) for line in lines]
    assert text.endswith("\n")
    assert run.metrics() == lines
    (run.path / "metrics.jsonl").write_text(text + "\n   \n")  # blank lines are passed over
    assert run.metrics() == lines


def test_write_jsonl_of_nothing_is_an_empty_file(tmp_path: Path) -> None:
    RunDir(tmp_path).write_jsonl("skipped.jsonl", [])
    assert (tmp_path / "skipped.jsonl").read_text() == ""


def test_write_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    data = {"best_epoch": 3, "test": {"accuracy": 0.75, "count": 24}}
    run.write_json("results.json", data)
    text = (tmp_path / "results.json").read_text()
    assert text == json.dumps(data, indent=2) + "\n"
    run.write_json("results.json", {"best_epoch": 4})  # replaced, not appended
    assert json.loads((tmp_path / "results.json").read_text()) == {"best_epoch": 4}
