"""The feature cache (``train.feature_cache``) timed against training without it, in one run.

Two trainings of the same model on the same generated rows (the demo dataset's captions and
images, :func:`mmplug_demo.dataset.generate`, no val or test split), each in a fresh run
directory of one temporary folder that also holds the data and the cache (never the user's
cache folder): first with ``train.feature_cache`` set to an empty folder, then with
``feature_cache: off``. The model is a frozen ``bert`` of the bert-base architecture (12 x 768,
random weights, ``size: bert-base``, a WordPiece vocabulary fitted on the captions: nothing is
downloaded), a frozen ``resnet50`` (``weights: null``, ``augment: false``) and the
``mmplug-fusion:concat`` fusion with a classification head; both encoders qualify for the
cache. Epoch times are the ``seconds`` of each epoch in the runs' ``metrics.jsonl`` (training
only: there is no val split, so no evaluation nor reliance check, ``train.reliance: false``
besides; checkpoint writing comes after the figure). Printed, with the issue's goals:

- epochs 2+ without the cache vs with it (every sample a hit): the speed-up (goal: >= 50x);
- epoch 1 with the cache (empty: every sample encoded, then written) vs epoch 1 without it:
  the overhead of writing the cache (goal: < 5%). A warm-up training of a few steps, not
  counted, goes before both: the process's first passes are slower than the rest. The cached
  run goes next, so whatever is still warming up is charged to the cache;
- the cache's size per entry (one per sample and cached encoder) and per row: the entries'
  bytes, the blocks they take (what ``train.feature_cache_limit_gb`` counts), and those with
  the shard folders (``du``).

With ``--repeat N`` the pair of trainings runs N times, interleaved, each cached one on an
empty cache, and each figure is the fastest of the N (other load on the machine only adds
time). On a shared 2-core machine an uncached epoch varies several times over from one epoch
to the next (torch's two threads wait for each other whenever another process takes a core),
which a few percent of overhead can't be told from: read that figure on an idle machine, or
with ``--repeat 3``.

The defaults (``--rows 256 --epochs 3 --image-size 112 --batch-size 32 --repeat 1``) take a
few minutes on an idle 2-core CPU (about 6 on a busy one), most of it in the four uncached
epochs (a hit epoch takes well under a second): 112 px is a quarter of ResNet-50's work at
224 px, the real size, which ``--image-size 224`` measures (the speed-up grows with it: only
uncached epochs pay for the encoders).

Usage::

    python benchmarks/feature_cache.py [--rows 256] [--epochs 3] [--image-size 112]
        [--batch-size 32] [--repeat 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import mmplug
from mmplug.data.feature_cache import FeatureStore
from mmplug_demo.dataset import CLASSES, generate

#: Training steps of the uncounted warm-up run.
WARMUP_STEPS = 2
#: The issue's goals: epochs 2+ at least this many times faster with the cache ...
SPEEDUP_GOAL = 50.0
#: ... and the first epoch at most this much slower for writing it (percent).
OVERHEAD_GOAL = 5.0


def config(data: Path, cache: str, args: argparse.Namespace, **train: Any) -> dict[str, Any]:
    """The benchmark's training config, with ``train.feature_cache: cache`` and ``train``."""
    return {
        "model": {
            "encoders": {
                "text": {
                    "name": "mmplug-text:bert",
                    "size": "bert-base",
                    "vocab_size": 400,
                    "max_length": 32,
                    "freeze": True,
                },
                "image": {
                    "name": "mmplug-image:resnet50",
                    "weights": None,
                    "image_size": args.image_size,
                    "augment": False,
                    "freeze": True,
                },
            },
            "fusion": {"name": "mmplug-fusion:concat", "dim": 64},
            "head": {"name": "mmplug:classification", "hidden_dims": [64]},
        },
        "data": {
            "train": str(data / "train.jsonl"),
            "columns": {"text": "caption", "image": "image"},
            "classes": CLASSES,
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": 0,
            "monitor": "train_loss",
            "reliance": False,
            "feature_cache": cache,
            **train,
        },
    }


def train(
    folder: Path,
    name: str,
    cache: str,
    args: argparse.Namespace,
    registry: mmplug.Registry,
    **settings: Any,
) -> tuple[list[float], list[str]]:
    """Train once; the seconds of each epoch and the run's feature cache log lines."""
    log = io.StringIO()
    run = mmplug.train(
        config(folder / "data", cache, args, **settings),
        out=folder / "runs" / name,
        registry=registry,
        reporter=mmplug.Reporter(stream=log, bars=False),
    )
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    said = [line for line in log.getvalue().splitlines() if line.startswith("feature cache")]
    return [float(line["seconds"]) for line in lines], said


def allocated_bytes(folder: Path) -> int:
    """What ``folder`` takes on disk: its files' and folders' allocated blocks (``du``), which
    for entries of a few KB is well past the sum of their sizes."""
    total = 0
    for path in (folder, *folder.rglob("*")):
        total += path.lstat().st_blocks * 512
    return total


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="training rows generated")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training (>= 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of trainings; the fastest figures count"
    )
    parser.add_argument(
        "--image-size", type=int, default=112, help="generated images and ResNet crop, px"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epochs 2+ are what the cache speeds up")

    with tempfile.TemporaryDirectory(prefix="mmplug-feature-cache-") as name:
        folder = Path(name)
        # Nothing may reach the user's cache folder or the network, whatever else reads these.
        os.environ["MMPLUG_CACHE_DIR"] = str(folder / "auto-cache")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        generate(folder / "data", train=args.rows, val=0, test=0, image_size=args.image_size)
        registry = mmplug.load_plugins().registry
        cache = folder / "cache"
        print(
            f"{args.rows} rows, {args.epochs} epochs, batch {args.batch_size}; bert-base "
            f"(frozen, random) + resnet50 at {args.image_size} px (frozen, random) + concat"
        )
        # The process's first forward and backward passes cost more than the later ones
        # (allocations, kernels chosen); a few uncounted steps keep that out of both epoch 1s.
        train(folder, "warm-up", "off", args, registry, epochs=1, max_steps=WARMUP_STEPS)
        cached: list[list[float]] = []
        plain: list[list[float]] = []
        for repeat in range(args.repeat):  # interleaved, so that load changes hit both alike
            cache = folder / f"cache-{repeat}"  # empty each time: epoch 1 fills it
            seconds, said = train(folder, f"cache-{repeat}", str(cache), args, registry)
            cached.append(seconds)
            if repeat == 0:
                for line in said:
                    print(f"  {line}")
                entries, counted = FeatureStore(cache, 0).usage()
                size = sum(p.stat().st_size for p in cache.rglob("*.safetensors"))
                allocated = allocated_bytes(cache)
            plain.append(train(folder, f"off-{repeat}", "off", args, registry)[0])
        if args.repeat > 1:
            for what, runs in (("with the cache", cached), ("without", plain)):
                shown = "; ".join(", ".join(f"{s:.2f}" for s in run) for run in runs)
                print(f"  epoch seconds {what}: {shown}")

    # The fastest of the repeats: other load on the machine only ever adds time.
    first = min(run[0] for run in cached)
    first_without = min(run[0] for run in plain)
    hits = min(statistics.mean(run[1:]) for run in cached)
    without = min(statistics.mean(run[1:]) for run in plain)
    speedup = without / hits if hits > 0 else float("inf")
    overhead = (first / first_without - 1) * 100
    print(f"epoch 1 (cache filling):         {first:8.2f} s")
    print(f"epochs 2+ with the cache (hits): {hits:8.2f} s per epoch")
    print(f"epochs 2+ without the cache:     {without:8.2f} s per epoch")
    print(
        f"speed-up of epochs 2+: {speedup:.1f}x "
        f"(goal >= {SPEEDUP_GOAL:.0f}x: {verdict(speedup >= SPEEDUP_GOAL)})"
    )
    print(
        f"epoch 1: with the cache {first:.2f} s, without {first_without:.2f} s: overhead "
        f"{overhead:+.1f}% (goal < {OVERHEAD_GOAL:.0f}%: {verdict(overhead < OVERHEAD_GOAL)})"
    )
    if entries:
        print(
            f"cache on disk: {size:,} bytes in {entries} entries: {size / entries:,.0f} bytes "
            f"per entry, {size / args.rows:,.0f} bytes per row"
        )
        print(
            f"  in blocks (what feature_cache_limit_gb counts): {counted:,} bytes, "
            f"{counted / entries:,.0f} per entry"
        )
        print(
            f"  allocated on disk (du, with the shard folders): {allocated:,} bytes, "
            f"{allocated / entries:,.0f} per entry, {allocated / args.rows:,.0f} per row"
        )
    else:
        print("cache on disk: no entries were written")


if __name__ == "__main__":
    main()
