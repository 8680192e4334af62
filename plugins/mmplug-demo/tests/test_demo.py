"""``mmplug demo``: its claims (fused beats every modality alone) and its plumbing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mmplug
from mmplug import ConfigError, MmplugError, Reporter
from mmplug.plugins.loading import load_plugins
from mmplug_demo.run import FUSION, KEYS, demo_config, run_demo


@pytest.mark.slow
def test_the_demo_meets_its_targets(tmp_path: Path) -> None:
    """The full demo, as `make demo` runs it (``mmplug compare`` end to end): fused test
    accuracy at least 0.9, every unimodal model at most 0.75 (the task caps them at 0.25
    plus noise)."""
    result = subprocess.run(
        [sys.executable, "-m", "mmplug", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    accuracy = report["test_accuracy"]
    assert set(accuracy) == {"fused", "audio only", "image only", "text only", "late average"}
    assert accuracy["fused"] >= 0.9
    assert report["best_unimodal"] <= 0.75
    assert report["fused_minus_late_average"] > 0.1
    assert report["chance"] == 0.125
    compared = json.loads((tmp_path / "demo" / "compare.json").read_text())
    assert compared["best_single"] in {"audio only", "image only", "text only"}
    assert compared["fused_minus_best_single"] == accuracy["fused"] - report["best_unimodal"]
    table = result.stdout[result.stdout.index("test split (160 rows)") :]
    assert "fused beats the best single modality" in table and "chance" in table


def test_a_small_demo_writes_runs_report_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    sizes = {"train": 24, "val": 8, "test": 8}
    report = run_demo(out, epochs=1, sizes=sizes, reporter=Reporter())
    assert {p.name for p in out.iterdir()} == {
        ".mmplug-demo",
        "data",
        "fused",
        "audio-only",
        "image-only",
        "text-only",
        "compare.json",
        "compare.png",
        "report.json",
    }
    assert json.loads((out / "report.json").read_text()) == report
    assert report["sizes"] == sizes and report["fusion"] == "mmplug-fusion:concat"
    assert (out / "fused" / "best" / "fitted" / "text").is_dir()  # the fitted vocabulary
    printed = capsys.readouterr().out
    assert "late average" in printed and "image only" in printed

    # running it again replaces the earlier demo: nothing of the first one is left
    (out / "fused" / "notes.txt").write_text("from the first demo")
    again = run_demo(out, epochs=1, sizes={**sizes, "train": 16}, reporter=Reporter(quiet=True))
    assert not (out / "fused" / "notes.txt").exists()
    assert again["sizes"]["train"] == 16
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 16


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MmplugError, match="not an earlier demo's folder"):
        run_demo(tmp_path, reporter=Reporter(quiet=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_demo_names_the_plugins_it_needs(tmp_path: Path) -> None:
    core_only = load_plugins(entry_points=False).registry
    with pytest.raises(
        ConfigError,
        match="the demo needs mmplug-audio, mmplug-fusion, mmplug-image, mmplug-text installed",
    ):
        run_demo(tmp_path / "demo", registry=core_only, reporter=Reporter(quiet=True))
    assert not (tmp_path / "demo").exists()


@mmplug.hookimpl
def register_fusions(register: mmplug.RegisterFn) -> None:
    register("concat", "lookalike.fusion:Concat")


@mmplug.hookimpl
def register_encoders(register: mmplug.RegisterFn) -> None:
    register("bert", "lookalike.encoder:Bert", modality="text")
    register("resnet18", "lookalike.encoder:ResNet", modality="image")


@mmplug.hookimpl
def register_heads(register: mmplug.RegisterFn) -> None:
    register("classification", "lookalike.head:Head")


def test_a_plugin_registering_the_same_names_changes_nothing(tmp_path: Path) -> None:
    """The demo names its components by distribution: another installed plugin with a
    ``concat``, ``bert``, ``resnet18`` and ``classification`` of its own is no ambiguity,
    and a bare name the user gives that is ambiguous gets the registry's error, not a claim
    that the demo's packages are missing."""
    host = load_plugins()
    record = host.add(sys.modules[__name__], name="lookalike", distribution="mmplug-lookalike")
    assert record.status == "loaded", record.error
    config = demo_config(KEYS, tmp_path / "data", fusion=FUSION, epochs=1, seed=0)
    resolved = mmplug.validate(config, registry=host.registry)
    assert {c.spec.distribution for c in resolved.encoders.values()} == {
        "mmplug-audio",
        "mmplug-image",
        "mmplug-text",
    }
    assert resolved.fusion.spec.distribution == "mmplug-fusion"
    with pytest.raises(ConfigError) as raised:
        run_demo(tmp_path / "demo", fusion="concat", registry=host.registry)
    message = str(raised.value)
    assert "registered by mmplug-fusion" in message and "mmplug-lookalike" in message
    assert "needs" not in message
    assert not (tmp_path / "demo").exists()
