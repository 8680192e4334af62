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
from types import ModuleType

import pytest
import torch
from conftest import make_toy_host
from training_helpers import start_training, toy_config, toy_data

import mmplug
from mmplug import MmplugError
from mmplug.plugins.host import PluginHost
from mmplug.runs.lock import locked_run
from mmplug.runs.rundir import RunDir
from mmplug.training.progress import Reporter

QUIET = Reporter(quiet=True)

HOLD_LOCK = """
import sys, time
from mmplug.runs.lock import locked_run
from mmplug.runs.rundir import RunDir
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


# -- damaged files are named, never used --------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot what was saved\x80" * 8)
    else:  # one bit flipped in the middle
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x04]) + data[middle + 1 :])


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, toy_plugin: ModuleType
) -> tuple[Path, dict[str, str]]:
    """One toy run, copied by each test that damages it."""
    root = tmp_path_factory.mktemp("trained")
    data = toy_data(root / "data")
    host = make_toy_host(toy_plugin)
    train(toy_config(data), host, out=root / "run")
    return root / "run", data


@pytest.fixture
def run_copy(tmp_path: Path, trained: tuple[Path, dict[str, str]]) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy, symlinks=True)
    return copy


HOWS = ["truncated", "garbage", "bitflip"]
CHECKPOINT_FILES = [
    "best/model.safetensors",
    "best/config.yaml",
    "best/trainer.json",
    "best/checksums.json",
    "labels.json",
]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_evaluate_names_a_damaged_file(
    run_copy: Path, trained: tuple[Path, dict[str, str]], toy_host: PluginHost, name: str, how: str
) -> None:
    if name.endswith(".safetensors"):  # best/'s weights are a second name of last/'s file
        (run_copy / name).unlink()
        (run_copy / name).write_bytes((run_copy / "last" / "model.safetensors").read_bytes())
    damage(run_copy / name, how)
    with pytest.raises(MmplugError, match=rf"{Path(name).name}.* (is damaged|does not fit)"):
        mmplug.evaluate(run_copy, trained[1]["test"], registry=toy_host.registry)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    "name", ["last/model.safetensors", "last/optimizer.safetensors", "last/trainer.json"]
)
def test_resume_names_a_damaged_file(
    run_copy: Path, toy_host: PluginHost, name: str, how: str
) -> None:
    if name == "last/model.safetensors":
        (run_copy / "best" / "model.safetensors").unlink()  # keep best/'s own copy intact
        (run_copy / "best" / "model.safetensors").write_bytes((run_copy / name).read_bytes())
    damage(run_copy / name, how)
    with pytest.raises(MmplugError, match=rf"{Path(name).name} is damaged.*other checkpoint"):
        train(None, toy_host, resume=run_copy)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_plugins_json_is_named(run_copy: Path, toy_host: PluginHost, how: str) -> None:
    damage(run_copy / "plugins.json", how)
    with pytest.raises(MmplugError, match=r"plugins\.json is damaged"):
        mmplug.load(run_copy, registry=toy_host.registry)


@pytest.mark.parametrize("how", HOWS)
def test_a_damaged_metrics_file_is_rewritten_by_resume(
    run_copy: Path, toy_host: PluginHost, how: str
) -> None:
    before = (run_copy / "metrics.jsonl").read_text()
    damage(run_copy / "metrics.jsonl", how)
    if how != "bitflip":
        with pytest.raises(MmplugError, match=r"metrics\.jsonl(, line \d+,)? is damaged"):
            RunDir.open(run_copy).metrics()
    train(None, toy_host, resume=run_copy)  # already finished: only the files are rewritten
    assert (run_copy / "metrics.jsonl").read_text() == before


def test_every_checkpoint_file_is_listed_with_its_checksum(run_copy: Path) -> None:
    for name in ("best", "last"):
        listed = json.loads((run_copy / name / "checksums.json").read_text())["files"]
        files = {
            p.relative_to(run_copy / name).as_posix()
            for p in (run_copy / name).rglob("*")
            if p.is_file() and p.name != "checksums.json"
        }
        assert set(listed) == files | {"../labels.json"}


def test_checkpoint_files_have_the_usual_permissions(run_copy: Path) -> None:
    import stat

    mask = os.umask(0)
    os.umask(mask)
    for path in run_copy.rglob("*"):
        if path.is_file() and path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


# -- numerical failure --------------------------------------------------------------------


def poison_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, parameter: str) -> None:
    """Make ``parameter`` NaN at the end of training epoch ``epoch``, as a divergence that
    the training loss did not show would."""
    from mmplug.training.trainer import Trainer

    original = Trainer._train_epoch

    def train_epoch(self: Trainer, number: int) -> dict[str, float]:
        logged = original(self, number)
        if number == epoch:
            with torch.no_grad():
                dict(self.model.named_parameters())[parameter].fill_(float("nan"))
        return logged

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


@pytest.mark.parametrize(
    ("parameter", "reported"),
    [
        ("encoders.stats.net.0.weight", r"val_loss nan"),  # the validation loss shows it
        ("unimodal_heads.word.net.1.weight", r"the weights"),  # only the weights do
    ],
    ids=["val-loss", "weights"],
)
def test_a_diverged_epoch_is_never_saved(
    tmp_path: Path,
    data: dict[str, str],
    toy_host: PluginHost,
    monkeypatch: pytest.MonkeyPatch,
    parameter: str,
    reported: str,
) -> None:
    poison_after_epoch(monkeypatch, 2, parameter)
    run = tmp_path / "run"
    with pytest.raises(MmplugError, match=rf"{reported}.*diverged at epoch 2.*hold epoch 1"):
        train(toy_config(data, epochs=3), toy_host, out=run)
    for name in ("best", "last"):
        saved = json.loads((run / name / "trainer.json").read_text())
        assert saved["state"]["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1]


def test_predict_and_evaluate_refuse_non_finite_outputs(
    run_copy: Path, trained: tuple[Path, dict[str, str]], toy_host: PluginHost
) -> None:
    predictor = mmplug.load(run_copy, registry=toy_host.registry)
    with torch.no_grad():
        for parameter in predictor.model.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(MmplugError, match=rf"{run_copy} \(best/\) gave non-finite outputs .*row"):
        list(predictor.predict_manifest(trained[1]["test"]))
    with pytest.raises(MmplugError, match=r"non-finite outputs .*for sample 0"):
        predictor.predict({"stats": [1.0, 0.0, 0.0, 1.0]})
    with pytest.raises(MmplugError, match=r"non-finite loss \(nan\)"):
        predictor.evaluate(trained[1]["test"])


def test_command_line_json_is_strict_json() -> None:
    from mmplug.cli.running import strict_json

    text = strict_json({"loss": 0.5, "auroc": float("nan"), "rows": [float("inf"), 1]})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "loss": 0.5,
        "auroc": None,
        "rows": [None, 1],
    }
