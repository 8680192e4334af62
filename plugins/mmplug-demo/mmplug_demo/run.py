"""``mmplug demo``: the whole pipeline on a generated dataset that needs all three modalities.

It writes a small text + image + audio dataset (:mod:`mmplug_demo.dataset`), trains a fused
model and one model per modality alone with the same encoders, evaluates each on the test
split and prints test accuracy per model next to chance level. Everything runs offline: the
text encoder is a from-scratch BERT whose WordPiece vocabulary is fitted on the captions, the
image encoder a ResNet-18 with random weights, the audio encoder ``mel-cnn``.

The components are named in configs like any user's (``bert``, ``resnet18``, ``mel-cnn``, a
fusion), through mmplug's public API only; the demo needs ``mmplug-text``, ``mmplug-image``,
``mmplug-audio`` and ``mmplug-fusion`` installed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mmplug
from mmplug import ConfigError, MmplugError, Reporter
from mmplug_demo.dataset import CLASSES, generate

if TYPE_CHECKING:
    from mmplug import Registry

KEYS = ("audio", "image", "text")
#: Side of the generated images, and of the crop the ResNet sees (no resizing).
IMAGE_SIZE = 32
ENCODERS: dict[str, dict[str, Any]] = {
    "text": {"name": "bert", "size": "bert-tiny", "vocab_size": 400, "max_length": 24},
    "image": {"name": "resnet18", "image_size": IMAGE_SIZE},
    "audio": {
        "name": "mel-cnn",
        "max_seconds": 0.5,
        "n_mels": 32,
        "channels": [16, 32, 64],
        "output_dim": 64,
    },
}
COLUMNS = {"text": "caption", "image": "image", "audio": "audio"}
PLUGINS = "mmplug-text, mmplug-image, mmplug-audio and mmplug-fusion"
#: Marks a folder the demo wrote, so that it replaces that folder and nothing else.
MARKER = ".mmplug-demo"
#: Samples per split.
SIZES = {"train": 512, "val": 128, "test": 160}


def demo_config(
    keys: tuple[str, ...], data: Path, *, fusion: str, epochs: int, seed: int
) -> dict[str, Any]:
    """The config of one demo model: the encoders of ``keys``, the fusion, a classifier."""
    return {
        "model": {
            "encoders": {key: ENCODERS[key] for key in keys},
            "fusion": {"name": fusion, "dim": 64},
            "head": {"name": "classification", "hidden_dims": [64]},
        },
        "data": {
            "train": str(data / "train.jsonl"),
            "val": str(data / "val.jsonl"),
            "test": str(data / "test.jsonl"),
            "columns": {key: COLUMNS[key] for key in keys},
            "classes": CLASSES,  # all 8, even if a small training split lacks one
        },
        "train": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "seed": seed, "patience": 2},
    }


def run_demo(
    out: str | Path = "runs/demo",
    *,
    fusion: str = "concat",
    epochs: int = 5,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Generate the dataset, train the fused model and the three unimodal ones, report.

    Args:
        out: the folder for ``data/``, one run directory per model and ``report.json``.
        fusion: the registered fusion that combines the three encoders.
        epochs: epochs per model.
        sizes: samples per split (``train``, ``val``, ``test``); default :data:`SIZES`.
        seed: seeds the data and every run.

    Returns:
        The report: test accuracy per model, chance level, seconds.
    """
    started = time.perf_counter()
    reporter = reporter or Reporter()
    out = Path(out)
    models = {"fused": KEYS, **{f"{key} only": (key,) for key in KEYS}}
    configs = {
        name: demo_config(keys, out / "data", fusion=fusion, epochs=epochs, seed=seed)
        for name, keys in models.items()
    }
    try:  # before anything is written: are the plugins there?
        mmplug.validate(configs["fused"], registry=registry)
    except ConfigError as exc:
        raise ConfigError(f"the demo needs {PLUGINS} installed: {exc}") from exc
    _clear(out)
    sizes = {**SIZES, **(sizes or {})}
    reporter.log(f"writing the dataset ({', '.join(f'{n} {s}' for s, n in sizes.items())})")
    generate(out / "data", seed=seed, image_size=IMAGE_SIZE, **sizes)
    accuracy: dict[str, float] = {}
    for name, config in configs.items():
        reporter.log(f"\n== {name}: {' + '.join(models[name])} ==")
        run = mmplug.train(
            config, out=out / name.replace(" ", "-"), registry=registry, reporter=reporter
        )
        results = json.loads((run / "results.json").read_text())
        accuracy[name] = results["test"]["accuracy"]
    report = {
        "fusion": fusion,
        "classes": len(CLASSES),
        "chance": 1 / len(CLASSES),
        "test_accuracy": accuracy,
        "best_unimodal": max(v for k, v in accuracy.items() if k != "fused"),
        "sizes": sizes,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report, reporter)
    return report


def _clear(out: Path) -> None:
    """Make room for a new demo: replace an earlier demo's folder (it has the marker file the
    demo writes first), refuse anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise MmplugError(f"{out} is not empty and not an earlier demo's folder; use --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by mmplug demo, which replaces this folder when rerun\n")


def _print_table(report: dict[str, Any], reporter: Reporter) -> None:
    reporter.log("\ntest accuracy (8 classes):")
    reporter.log(f"  {'chance':<12} {report['chance']:.3f}")
    for name, value in report["test_accuracy"].items():
        reporter.log(f"  {name:<12} {value:.3f}")
    reporter.log(f"done in {report['seconds']:.0f} s")
