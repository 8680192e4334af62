"""A tiny labelled dataset for the toy plugin (examples/toy_plugin.py) and its config.

Key ``stats`` (modality ``numbers``) carries the class in its first number; key ``word``
(modality ``word``) is noise. Small enough that a run of a few epochs takes about a second.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CLASSES = ("ant", "bee", "cat")

#: The demo's three encoders at their smallest: bert-tiny, a 32-pixel resnet18, a small
#: mel-cnn (the end-to-end and feature-command tests).
TINY_ENCODERS = {
    "text": {"name": "bert", "size": "bert-tiny", "vocab_size": 120, "max_length": 16},
    "image": {"name": "resnet18", "image_size": 32},
    "audio": {
        "name": "mel-cnn",
        "max_seconds": 0.25,
        "n_mels": 16,
        "channels": [8, 16],
        "output_dim": 16,
    },
}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def toy_rows(count: int, seed: int, *, absent_every: int = 0) -> list[dict[str, Any]]:
    """Rows ``{stats, word, label}``; every ``absent_every``-th row has no word."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = rng.randrange(len(CLASSES))
        row: dict[str, Any] = {
            "stats": [label * 2.0 + rng.gauss(0, 0.3), rng.gauss(0, 1), rng.gauss(0, 1), 1.0],
            "word": rng.choice(["red", "green", "blue"]),
            "label": CLASSES[label],
        }
        if absent_every and index % absent_every == 0:
            row["word"] = None
        rows.append(row)
    return rows


def toy_data(root: Path, *, train: int = 48, val: int = 24, test: int = 24) -> dict[str, str]:
    """Write train/val/test manifests under ``root``; return the ``data`` section."""
    section = {}
    for seed, (split, count) in enumerate((("train", train), ("val", val), ("test", test))):
        rows = toy_rows(count, seed, absent_every=5)
        section[split] = str(write_rows(root / f"{split}.jsonl", rows))
    return section


def toy_config(data: dict[str, Any], **train: Any) -> dict[str, Any]:
    return {
        "model": {
            "encoders": {
                "stats": {"name": "mlp", "input_size": 4, "dim": 16},
                "word": {"name": "char-bag", "dim": 8},
            },
            "fusion": {"name": "mean", "dim": 16},
            "head": {"name": "classification"},
        },
        "data": data,
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, **train},
    }


def metric_lines(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock field."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


TRAIN_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import importlib.util, json
from conftest import make_toy_host
spec = importlib.util.spec_from_file_location("toy_plugin", {toy!r})
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
import mmplug
from mmplug.training.progress import Reporter
config = json.loads({config!r})
registry = make_toy_host(toy).registry
try:
    mmplug.train(config, out={out!r}, resume={resume!r}, registry=registry,
                 reporter=Reporter(quiet=True))
except mmplug.MmplugError as exc:
    print(f"mmplug: error: {{exc}}", file=sys.stderr)
    sys.exit(2)
"""


def start_training(
    config: dict[str, Any] | None, out: Path, *, resume: bool = False, **popen: Any
) -> subprocess.Popen[str]:
    """``mmplug train`` of the toy plugin's ``config`` into ``out`` (or ``--resume out``) in a
    child process, as the command line reports it: a user error on stderr, exit code 2."""
    tests = Path(__file__).resolve().parent
    script = TRAIN_CHILD.format(
        tests=str(tests),
        toy=str(tests.parent / "examples" / "toy_plugin.py"),
        config=json.dumps(config),
        out=None if resume else str(out),
        resume=str(out) if resume else None,
    )
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], text=True, **popen)
