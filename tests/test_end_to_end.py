"""The ``mmplug`` command end to end with the real plugins on a tiny text+image+audio set.

One run is trained through ``mmplug train`` (in a subprocess, with the installed plugins),
on a manifest that has a corrupt image (skipped and listed) and rows with absent
modalities; the tests then evaluate, predict, resume and load it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import mmplug
from mmplug_demo.dataset import CLASSES, generate
from mmplug_demo.run import demo_config

from .conftest import environ_without_settings
from .training_helpers import TINY_ENCODERS


def mmplug_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = environ_without_settings()
    return subprocess.run(
        [sys.executable, "-m", "mmplug", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data (a corrupt image, absent values), a config, and a run trained by the CLI."""
    root = tmp_path_factory.mktemp("e2e")
    data = generate(root / "data", train=48, val=16, test=16, image_size=32, seconds=0.25)
    rows = [json.loads(line) for line in data.train.read_text().splitlines()]
    (data.root / rows[5]["image"]).write_bytes(b"this is not a png")
    rows[7]["caption"] = None  # absent text
    del rows[8]["audio"]  # absent audio
    data.train.write_text("".join(json.dumps(row) + "\n" for row in rows))

    config = demo_config(("audio", "image", "text"), data.root, fusion="concat", epochs=2, seed=0)
    config["model"]["encoders"] = TINY_ENCODERS
    config["data"]["on_error"] = "skip"
    config["data"] |= {split: f"data/{split}.jsonl" for split in ("train", "val", "test")}
    config["train"]["batch_size"] = 16
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    result = mmplug_cli("train", "config.yaml", "--out", "run", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 row(s) that could not be read" in result.stdout
    return root


def test_train_writes_the_run_and_lists_the_corrupt_row(workdir: Path) -> None:
    run = workdir / "run"
    [skipped] = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert skipped["row"] == 6 and skipped["manifest"].endswith("train.jsonl")
    assert "column 'image'" in skipped["error"] and "train-0006.png" in skipped["error"]
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2]
    # the text encoder's vocabulary, fitted on the captions, is saved with each checkpoint
    assert (run / "best" / "fitted" / "text").is_dir()
    plugins = json.loads((run / "plugins.json").read_text())["distributions"]
    assert {"mmplug-text", "mmplug-image", "mmplug-audio", "mmplug-fusion"} <= set(plugins)


def test_evaluate_prints_metrics_and_a_confusion_matrix(workdir: Path) -> None:
    result = mmplug_cli("evaluate", "run", "--data", "data/test.jsonl", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert CLASSES[0] in result.stdout

    result = mmplug_cli("evaluate", "run", "--data", "data/test.jsonl", "--json", cwd=workdir)
    report = json.loads(result.stdout)
    assert report["count"] == 16 and report["confusion"]["classes"] == CLASSES
    assert sum(map(sum, report["confusion"]["matrix"])) == 16


def test_predict_a_manifest_and_single_samples(workdir: Path) -> None:
    result = mmplug_cli(
        "predict",
        "run",
        "--data",
        "data/test.jsonl",
        "--keep",
        "id",
        "--out",
        "preds.jsonl",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (workdir / "preds.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 17))
    assert all(line["label"] in CLASSES for line in lines)
    rows = [json.loads(line) for line in (workdir / "data" / "test.jsonl").open()]
    assert [line["id"] for line in lines] == [row["id"] for row in rows]  # --keep id

    missing = mmplug_cli(
        "predict", "run", "--data", "data/test.jsonl", "--keep", "idd", cwd=workdir
    )
    assert (
        missing.returncode == 2
        and "no column 'idd' (given with --keep); did you mean 'id'?" in missing.stderr
    )

    first = json.loads((workdir / "data" / "test.jsonl").read_text().splitlines()[0])
    result = mmplug_cli(
        "predict",
        "run",
        "--text",
        first["caption"],
        "--image",
        f"data/{first['image']}",
        "--audio",
        f"data/{first['audio']}",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    single = json.loads(result.stdout)
    assert single["label"] == lines[0]["label"]
    assert single["probabilities"] == pytest.approx(lines[0]["probabilities"], abs=1e-4)

    text_only = mmplug_cli("predict", "run", "--text", "a calm dog", cwd=workdir)
    assert text_only.returncode == 0, text_only.stderr
    assert json.loads(text_only.stdout)["label"] in CLASSES

    wrong = mmplug_cli("predict", "run", "--colour", "red", cwd=workdir)
    assert wrong.returncode == 2
    assert "no modality colour" in wrong.stderr and "audio, image, text" in wrong.stderr


def test_resume_with_more_epochs_then_load(workdir: Path) -> None:
    result = mmplug_cli("train", "--resume", "run", "train.epochs=3", cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").open()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]

    predictor = mmplug.load(workdir / "run", checkpoint="last")
    samples: list[dict[str, Any]] = [
        {"text": "the quiet dog waits in the park"},
        {"image": workdir / "data" / "images" / "test-0001.png", "text": None},
        {},
    ]
    predictions = predictor.predict(samples)
    assert [p["label"] in CLASSES for p in predictions] == [True, True, True]


def test_user_errors_exit_2_with_one_message(workdir: Path) -> None:
    result = mmplug_cli(
        "train", "config.yaml", "data.columns.text=caption_text", "--out", "bad", cwd=workdir
    )
    assert result.returncode == 2
    assert "no column 'caption_text'" in result.stderr and "Traceback" not in result.stderr
    assert "did you mean 'caption'?" in result.stderr

    result = mmplug_cli("evaluate", "nowhere", "--data", "data/test.jsonl", cwd=workdir)
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_same_seed_same_metrics_with_the_real_encoders(workdir: Path) -> None:
    """Training the CLI's config again in this process gives the same metrics, the fitted
    WordPiece vocabulary included."""
    from mmplug.training.progress import Reporter

    again = mmplug.train(
        workdir / "config.yaml", out=workdir / "again", reporter=Reporter(quiet=True)
    )

    def lines(run: Path) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows[:2]]

    assert lines(again) == lines(workdir / "run")
