"""Reliability under faults and hostile input: one writer per run directory, runs that
recover from a kill at any moment, damaged files named, non-finite numbers refused.

The concurrency and kill tests use real processes (the lock is the operating system's)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import cli, make_toy_host
from training_helpers import start_training, toy_config, toy_data

import mmplug
from mmplug import MmplugError
from mmplug.plugins.host import PluginHost
from mmplug.runs.lock import locked_run
from mmplug.runs.rundir import RunDir
from mmplug.training.progress import Reporter
from mmplug.training.train import unstarted

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


@pytest.mark.parametrize("trigger", [".lock", "labels.json", "config.yaml", "plugins.json"])
def test_a_real_kill_during_creation_is_recovered(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, trigger: str
) -> None:
    """SIGKILL the moment ``trigger`` appears in a new run's folder: whatever the kill left,
    ``train --out`` takes the folder over (or, had a checkpoint been written, ``--resume``
    continues it)."""
    run = tmp_path / "run"
    child = start_training(toy_config(data, epochs=40), run)
    try:
        deadline = time.monotonic() + 120
        while not (run / trigger).exists():
            assert child.poll() is None, f"the child ended before writing {trigger}"
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    if unstarted(run):
        train(toy_config(data), toy_host, out=run)
        assert json.loads((run / "results.json").read_text())["epochs"] == 2
    else:  # the kill came after the first checkpoint (a slow poll); that must resume too
        train(None, toy_host, resume=run)
        assert json.loads((run / "results.json").read_text())["epochs"] == 40
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == [".lock"]


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


# -- valid JSON that is not valid text; plugins that raise anything -----------------------


def poisoned_data(root: Path, word: str) -> dict[str, str]:
    """The toy data with ``word`` in training row 3 (line 4) and test row 1 (line 2)."""
    from training_helpers import toy_rows, write_rows

    data = toy_data(root)
    for split, index in (("train", 3), ("test", 1)):
        rows = [json.loads(line) for line in Path(data[split]).read_text().splitlines()]
        rows[index]["word"] = word
        write_rows(Path(data[split]), rows)
    assert toy_rows  # the rows' shape is the helpers'
    return data


@pytest.fixture
def strict_word_loader(toy_plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party loader that refuses a value with a ValueError, not a DataError."""
    original = toy_plugin.WordModality.load

    def load(self: object, value: object, **kwargs: object) -> object:
        if value == "poison":
            raise ValueError("poison is not a word")
        return original(self, value, **kwargs)

    monkeypatch.setattr(toy_plugin.WordModality, "load", load)


@pytest.mark.parametrize(
    ("word", "named"),
    [
        (
            "\ud800",
            r"preprocess of encoder 'char-bag' from toy-plugin 1\.0, CharBagEncoder "
            r"\(toy_plugin\) raised UnicodeEncodeError",
        ),
        (
            "poison",
            r"load of modality 'word' from toy-plugin 1\.0, WordModality \(toy_plugin\) "
            r"raised ValueError: poison is not a word",
        ),
    ],
    ids=["lone-surrogate-in-preprocess", "loader-raises-valueerror"],
)
@pytest.mark.usefixtures("strict_word_loader")
def test_anything_a_plugin_raises_for_a_row_is_that_rows_data_error(
    tmp_path: Path, toy_host: PluginHost, word: str, named: str
) -> None:
    data = poisoned_data(tmp_path / "data", word)
    with pytest.raises(MmplugError, match=rf"train\.jsonl row 4.*{named}"):
        train(toy_config(data), toy_host, out=tmp_path / "strict")

    run = train(toy_config(data | {"on_error": "skip"}), toy_host, out=tmp_path / "skip")
    skipped = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert [(Path(row["manifest"]).name, row["row"]) for row in skipped] == [
        ("test.jsonl", 2),
        ("train.jsonl", 4),
    ]
    assert all(re.search(named, row["error"]) for row in skipped)
    results = json.loads((run / "results.json").read_text())
    assert results["skipped"] == 2 and results["test"]["count"] == 23


# -- bounded cost on hostile configs ------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
model:
  encoders: {stats: {name: mlp, input_size: *i}}
  fusion: {name: *i}
  head: *i
"""

TOO_MANY_DIGITS = r"a number has more than 4,300 digits"
HOSTILE_CONFIGS = {
    "billion-laughs.yaml": (BILLION_LAUGHS, r"once its YAML aliases are expanded"),
    "recursive.yaml": ("a: &a [*a]\nmodel: *a\n", r"(refers to itself|invalid YAML)"),
    "duplicate.yaml": (
        "model: {}\ntrain: {lr: 0.1}\ntrain: {lr: 10}\n",
        r"key 'train' is given twice \(line 3",
    ),
    "duplicate.json": ('{"model": {}, "model": {}}', r"key 'model' is given twice"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, r"nested too deeply"),
    "digits.yaml": ("train: {seed: " + "9" * 5000 + "}\n", TOO_MANY_DIGITS),
    "digits.json": ('{"train": {"seed": ' + "9" * 5000 + "}}", TOO_MANY_DIGITS),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_mmplug_validate_refuses_a_hostile_config_in_one_line(tmp_path: Path, name: str) -> None:
    text, expected = HOSTILE_CONFIGS[name]
    (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "mmplug", "validate", name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # an unbounded expansion would not end in time (or at all)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors and re.search(expected, done.stderr), done.stderr[-2000:]
    assert len(done.stderr) < 5_000


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.seed=" + "1" * 31, r"train\.seed: .*less than 9223372036854775808"),
        ("train.seed=-1", r"train\.seed: .*greater than or equal to 0"),
        ("train.warmup=.inf", r"train\.warmup: .*finite"),
        ("train.lr=.nan", r"train\.lr: .*finite"),
        ("train.device=meta", r"train\.device: can't use device 'meta': mmplug runs models on"),
        ("model.head.num_classes=" + "9" * 15, r"model\.head.*(failed to build|memory)"),
    ],
    ids=["huge-seed", "negative-seed", "inf-warmup", "nan-lr", "meta-device", "huge-head"],
)
def test_impossible_settings_are_one_line_errors(
    data: dict[str, str], toy_host: PluginHost, tmp_path: Path, override: str, expected: str
) -> None:
    with pytest.raises(MmplugError, match=expected) as info:
        mmplug.train(
            toy_config(data),
            [override],
            registry=toy_host.registry,
            reporter=QUIET,
            out=tmp_path / "run",
        )
    assert len(str(info.value)) < 2_000
    assert not (tmp_path / "run").exists()


def test_messages_bound_what_they_quote() -> None:
    from mmplug.errors import bounded, brief

    nested: list[object] = []
    for _ in range(1000):
        nested = [nested, "x" * 1000]
    assert len(brief(nested)) < 400
    assert len(brief(10**5000)) < 60 and "bits" in brief(10**5000)
    assert bounded("y" * 10_000).endswith("(10,000 characters)")


# -- manifests that are valid JSON or CSV but not valid rows ------------------------------


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        (
            '{"stats": [1, 0, 0, 1], "label": "ant", "label": "bee"}\n',
            "jsonl",
            r"line 1: key 'label' is given twice",
        ),
        (
            '{"stats": ' + "[" * 50_000 + "]" * 50_000 + ', "label": "ant"}\n',
            "jsonl",
            r"line 1: JSON nested too deeply",
        ),
        (
            '{"stats": [1, 0, 0, 1], "label": ' + "7" * 5000 + "}\n",
            "jsonl",
            r"line 1: a number has more than 4,300 digits",
        ),
        (
            "stats,label,label\n1;0;0;1,ant,bee\n",
            "csv",
            r"line 1: the header names column 'label' more than once",
        ),
        ('{"stats": [1, 0, 0, 1], "label": Infinity}\n', "jsonl", r"row 1.*no class is inf"),
    ],
    ids=["duplicate-json-key", "deep-json", "digits", "duplicate-csv-header", "inf-label"],
)
def test_a_manifest_that_is_not_valid_rows_is_named(
    tmp_path: Path, toy_host: PluginHost, content: str, suffix: str, expected: str
) -> None:
    path = tmp_path / f"train.{suffix}"
    path.write_text(content)
    with pytest.raises(MmplugError, match=expected) as info:
        train(toy_config({"train": str(path)}), toy_host, out=tmp_path / "run")
    assert str(path) in str(info.value) and len(str(info.value)) < 2_000


# -- data that is valid but useless -------------------------------------------------------


def test_a_column_empty_in_every_row_is_a_warning_naming_key_and_column(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    import io

    from training_helpers import write_rows

    data = toy_data(tmp_path / "data")
    rows = [json.loads(line) for line in Path(data["val"]).read_text().splitlines()]
    write_rows(Path(data["val"]), [{**row, "word": None} for row in rows])
    log = io.StringIO()
    mmplug.train(
        toy_config(data),
        registry=toy_host.registry,
        out=tmp_path / "run",
        reporter=Reporter(stream=log, bars=False),
    )
    warned = [line for line in log.getvalue().splitlines() if "empty in every row" in line]
    assert len(warned) == 1, log.getvalue()
    assert "val.jsonl column 'word' (key 'word')" in warned[0]


# -- disk full -----------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_last_checkpoint(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import safetensors.torch

    real = safetensors.torch.save_model
    calls = []

    def fill_the_disk(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:  # epoch 2's last/
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", fill_the_disk)
    run = tmp_path / "run"
    with pytest.raises(
        MmplugError,
        match=r"could not write .*run/last: No space left on device; "
        r"its previous version, if it had one, is intact",
    ):
        train(toy_config(data, epochs=3), toy_host, out=run)
    assert json.loads((run / "last" / "trainer.json").read_text())["state"]["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.startswith(".last.")]  # no half-written copy
    monkeypatch.undo()
    train(None, toy_host, resume=run)  # space freed: the run continues from epoch 1
    assert json.loads((run / "results.json").read_text())["epochs"] == 3


# -- the command line: one line, exit 2, never a traceback --------------------------------


@pytest.fixture(scope="module")
def cli_run(toy_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run trained with ``mmplug train``: (its folder, the data folder)."""
    import yaml

    root = tmp_path_factory.mktemp("cli")
    data = toy_data(root / "data")
    (root / "config.yaml").write_text(yaml.safe_dump(toy_config(data)))
    done = cli(toy_site, "train", "config.yaml", "--out", "run", "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "run", root / "data"


def copy_run(cli_run: tuple[Path, Path], tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(cli_run[0], tmp_path / "run")
    (tmp_path / "config.yaml").write_text((cli_run[0].parent / "config.yaml").read_text())
    return tmp_path / "run"


CLI_CASES = {
    "evaluate, weights bit-flipped": (
        "best/model.safetensors",
        "bitflip",
        ["evaluate", "run", "--data", "{data}/test.jsonl"],
        r"model\.safetensors is damaged",
    ),
    "predict, labels garbage": (
        "labels.json",
        "garbage",
        ["predict", "run", "--data", "{data}/test.jsonl"],
        r"labels\.json is damaged",
    ),
    "resume, trainer state truncated": (
        "last/trainer.json",
        "truncated",
        ["train", "--resume", "run"],
        r"trainer\.json is damaged",
    ),
    "evaluate, plugins.json truncated": (
        "plugins.json",
        "truncated",
        ["evaluate", "run", "--data", "{data}/test.jsonl"],
        r"plugins\.json is damaged",
    ),
    "predict, a byte that is not UTF-8": (
        None,
        None,
        ["predict", "run", "--stats", "1,0,0,1", "--word", b"caf\xe9"],
        r"sample 0.*key 'word'.*preprocess of encoder 'char-bag' from toy-plugin 1\.0, "
        r"CharBagEncoder \(toy_plugin\) raised UnicodeEncodeError",
    ),
    "train into a run's folder": (
        None,
        None,
        ["train", "config.yaml", "--out", "run"],
        r"run already exists and is not empty: .*--resume run",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_the_command_line_reports_damage_and_bad_input_in_one_line(
    cli_run: tuple[Path, Path], toy_site: Path, tmp_path: Path, case: str
) -> None:
    name, how, args, expected = CLI_CASES[case]
    run = copy_run(cli_run, tmp_path)
    if name is not None:
        if name.endswith(".safetensors"):  # best/'s weights are a second name of last/'s
            (run / name).unlink()
            (run / name).write_bytes((run / "last" / "model.safetensors").read_bytes())
        damage(run / name, how)
    words = [a.replace("{data}", str(cli_run[1])) if isinstance(a, str) else a for a in args]
    done = cli(toy_site, *words, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("mmplug: error:")]
    assert re.search(expected, done.stderr), done.stderr[-2000:]


def test_a_folder_with_hidden_files_of_its_own_is_not_taken_over(
    tmp_path: Path, data: dict[str, str], toy_host: PluginHost
) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    with pytest.raises(MmplugError, match="already exists and is not empty"):
        train(toy_config(data), toy_host, out=tmp_path / "repo")
    assert [p.name for p in (tmp_path / "repo").iterdir()] == [".git"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{lr: 1, lr: 2}", r"train: override value: key 'lr' is given twice"),
        (
            "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
            "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
            "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]",
            r"train: override value: .*once its YAML aliases are expanded",
        ),
        ("9" * 5000, r"train: override value: a number has more than 4,300 digits"),
    ],
    ids=["duplicate-key", "alias-bomb", "digits"],
)
def test_override_values_get_the_checks_config_files_get(value: str, expected: str) -> None:
    from mmplug.model.config import load_config

    with pytest.raises(MmplugError, match=expected) as info:
        load_config({"model": {}}, [f"train={value}"])
    assert len(str(info.value)) < 2_000
