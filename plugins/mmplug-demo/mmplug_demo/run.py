"""``mmplug demo``: the whole pipeline on a generated dataset that needs all three modalities.

It writes a small text + image + audio dataset (:mod:`mmplug_demo.dataset`) and runs
``mmplug compare`` on it (:func:`mmplug.compare`): a fused model and one model per modality
alone with the same encoders, each scored on the test split, printed next to chance and the
late average of the single-modality models. Everything runs offline: the
text encoder is a from-scratch BERT whose WordPiece vocabulary is fitted on the captions, the
image encoder a ResNet-18 with random weights, the audio encoder ``mel-cnn``.

The components are named in configs like any user's, through mmplug's public API only, and
by qualified name (``mmplug-text:bert``, ``mmplug-image:resnet18``, ``mmplug-audio:mel-cnn``,
``mmplug-fusion:concat``, ``mmplug:classification``), so that another installed plugin that
registers one of those names too changes nothing; the demo needs ``mmplug-text``,
``mmplug-image``, ``mmplug-audio`` and (for its default fusion) ``mmplug-fusion`` installed.
"""

from __future__ import annotations

import json
import re
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
    "text": {"name": "mmplug-text:bert", "size": "bert-tiny", "vocab_size": 400, "max_length": 24},
    "image": {"name": "mmplug-image:resnet18", "image_size": IMAGE_SIZE},
    "audio": {
        "name": "mmplug-audio:mel-cnn",
        "max_seconds": 0.5,
        "n_mels": 32,
        "channels": [16, 32, 64],
        "output_dim": 64,
    },
}
COLUMNS = {"text": "caption", "image": "image", "audio": "audio"}
#: The default fusion; ``--fusion`` takes any registered one, bare or qualified.
FUSION = "mmplug-fusion:concat"
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
            "head": {"name": "mmplug:classification", "hidden_dims": [64]},
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
    fusion: str = FUSION,
    epochs: int = 5,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Generate the dataset, then compare the fused model with each modality alone.

    Args:
        out: the folder for ``data/``, what ``mmplug compare`` writes (one run directory
            per model, ``compare.json``, ``compare.png``) and ``report.json``.
        fusion: the registered fusion that combines the three encoders.
        epochs: epochs per model.
        sizes: samples per split (``train``, ``val``, ``test``); default :data:`SIZES`.
        seed: seeds the data and every run.

    Returns:
        The report: test accuracy per model and of the late average, chance level, seconds.
    """
    started = time.perf_counter()
    reporter = reporter or Reporter()
    out = Path(out)
    config = demo_config(KEYS, out / "data", fusion=fusion, epochs=epochs, seed=seed)
    _check_plugins(config, registry)  # before anything is written
    _clear(out)
    sizes = {**SIZES, **(sizes or {})}
    reporter.log(f"writing the dataset ({', '.join(f'{n} {s}' for s, n in sizes.items())})")
    generate(out / "data", seed=seed, image_size=IMAGE_SIZE, **sizes)
    compared = mmplug.compare(config, out=out, registry=registry, reporter=reporter)
    accuracy = {name: model["test"]["accuracy"] for name, model in compared["models"].items()}
    singles = [value for name, value in accuracy.items() if name.endswith(" only")]
    report = {
        "fusion": fusion,
        "classes": len(CLASSES),
        "chance": 1 / len(CLASSES),
        "test_accuracy": accuracy,
        "best_unimodal": max(singles),
        "fused_minus_late_average": compared["fused_minus_late_average"],
        "sizes": sizes,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    reporter.log(f"done in {report['seconds']:.0f} s")
    return report


def _check_plugins(config: dict[str, Any], registry: Registry | None) -> None:
    """The config validates, or a clear error: the distributions its qualified names need and
    the registry lacks (the packages to install), else the config's own problems."""
    try:
        mmplug.validate(config, registry=registry)
    except ConfigError as exc:
        have = registry if registry is not None else mmplug.load_plugins().registry
        installed = {_normal(spec.distribution) for spec in have.components()}
        model = config["model"]
        named = [*model["encoders"].values(), model["fusion"], model["head"]]
        needed = dict.fromkeys(e["name"].rpartition(":")[0] for e in named if ":" in e["name"])
        missing = sorted(name for name in needed if _normal(name) not in installed)
        if missing:
            raise ConfigError(
                f"the demo needs {', '.join(missing)} installed (pip install {' '.join(missing)}): "
                f"{exc}"
            ) from exc
        raise


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _clear(out: Path) -> None:
    """Make room for a new demo: replace an earlier demo's folder (it has the marker file the
    demo writes first), refuse anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise MmplugError(f"{out} is not empty and not an earlier demo's folder; use --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by mmplug demo, which replaces this folder when rerun\n")
