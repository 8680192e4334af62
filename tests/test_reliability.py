"""Reliability under faults and hostile input: one writer per run directory, runs that
recover from a kill at any moment, damaged files named, non-finite numbers refused.

The concurrency and kill tests use real processes (the lock is the operating system's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from training_helpers import start_training, toy_config, toy_data

import mmplug
from mmplug import MmplugError
from mmplug.plugins.host import PluginHost
from mmplug.runs.lock import locked_run
from mmplug.training.progress import Reporter

QUIET = Reporter(quiet=True)

HOLD_LOCK = """
import sys, time
from mmplug.runs.lock import locked_run
with locked_run(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    return toy_data(tmp_path / "data")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the lock of ``tmp_path / 'run'``."""
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    yield run, child
    child.kill()
    child.wait()


def train(config: dict | None, host: PluginHost, **where: Path) -> Path:
    return mmplug.train(config, registry=host.registry, reporter=QUIET, **where)


# -- one writer per run directory ---------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(
    holder: tuple[Path, subprocess.Popen[str]], data: dict[str, str], toy_host: PluginHost
) -> None:
    run, child = holder
    with pytest.raises(MmplugError, match=rf"in use by another mmplug process \(pid {child.pid}\)"):
        train(toy_config(data), toy_host, out=run)
    assert [p.name for p in run.iterdir()] == [".lock"]  # nothing written, nothing removed


def test_resume_is_refused_while_the_run_is_being_written(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = train(toy_config(data), toy_host, out=tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(MmplugError, match=rf"pid {child.pid}"):
            train(None, toy_host, resume=run)
    finally:
        child.kill()
        child.wait()
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_killed_holder_leaves_no_stale_lock(
    holder: tuple[Path, subprocess.Popen[str]], data: dict[str, str], toy_host: PluginHost
) -> None:
    run, child = holder
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (run / ".lock").is_file()  # the file stays; the OS dropped the lock with the process
    train(toy_config(data), toy_host, out=run)
    assert (run / "best" / "model.safetensors").is_file()


def test_the_lock_is_taken_again_by_the_same_process(tmp_path: Path) -> None:
    with locked_run(tmp_path / "run"):
        pass
    with locked_run(tmp_path / "run"):  # released on leaving the block
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())


def test_two_trainings_into_one_folder_at_once_leave_one_consistent_run(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    out = tmp_path / "same"
    configs = [toy_config(data, epochs=6, seed=seed) for seed in (11, 22)]
    children = [start_training(c, out, stderr=subprocess.PIPE) for c in configs]
    outcomes = []
    for child in children:
        _, err = child.communicate(timeout=300)
        outcomes.append((child.returncode, err))
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    winner, (_, refusal) = (0, outcomes[1]) if outcomes[0][0] == 0 else (1, outcomes[0])
    assert "Traceback" not in refusal
    assert "in use by another mmplug process (pid" in refusal or "already exists" in refusal
    saved = json.loads((out / "last" / "trainer.json").read_text())
    config = (out / "config.yaml").read_text()
    assert f"seed: {configs[winner]['train']['seed']}" in config
    assert saved["state"]["epoch"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    result = mmplug.evaluate(out, data["test"], registry=toy_host.registry)
    assert result.count == 24  # the survivor is usable whole


# -- a kill while a run directory is created ----------------------------------------------


def killed_during_creation(run: Path, *names: str) -> Path:
    """What a run killed after writing only ``names`` leaves (copied from a real run)."""
    run.mkdir(parents=True)
    for name in names:
        (run / name).write_text("{}\n" if name.endswith(".json") else "partial: x\n")
    (run / ".lock").write_text("12345\n")
    (run / f".plugins.json.{2**22 + 7}.abc").write_text("half")  # a dead writer's staging
    return run


@pytest.mark.parametrize("written", [(), ("labels.json",), ("labels.json", "config.yaml")], ids=len)
def test_train_out_takes_over_a_folder_killed_during_creation(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, written: tuple[str, ...]
) -> None:
    run = killed_during_creation(tmp_path / "run", *written)
    train(toy_config(data), toy_host, out=run)
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_resume_of_a_folder_killed_before_its_config_needs_the_config(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    run = killed_during_creation(tmp_path / "run", "labels.json")
    with pytest.raises(MmplugError, match=r"before its config.yaml .*mmplug train CONFIG --out"):
        train(None, toy_host, resume=run)
    train(toy_config(data), toy_host, resume=run)  # given the config, it starts over
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_a_failed_start_leaves_no_folder_behind(tmp_path: Path, toy_host: PluginHost) -> None:
    with pytest.raises(MmplugError):
        train(toy_config({"train": str(tmp_path / "missing.jsonl")}), toy_host, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_folder_that_is_not_a_run_gets_no_lock_file(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(MmplugError, match="already exists and is not empty"):
        train(toy_config(data), toy_host, out=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
