"""Does fusion earn its keep on real data? Fused variants against each modality alone, on
AV-digits (benchmarks/av_digits.py), over several seeds.

For each seed it trains the image-only and audio-only models once and every fused variant
once, all with the settings of AV-digits' config, and prints test accuracy as mean and spread
(min to max) over the seeds, next to chance and the late average of the single-modality
models (:mod:`mmplug.training.compare`). Figures go to docs/fusion-benchmark.md by hand.

Usage::

    python benchmarks/fusion_benchmark.py [--data /tmp/av-digits] [--seeds 3] [--out DIR]
        [--variants joint,unimodal,ogm,late]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import mmplug
from mmplug import Reporter
from mmplug.training.compare import FUSED

#: Fused variants: overrides on top of the benchmark's config.
VARIANTS: dict[str, list[str]] = {
    "joint": ["model.unimodal_heads=false"],
    "unimodal": ["model.unimodal_heads=true"],
    "ogm": ["model.unimodal_heads=true", "train.modulation=0.5"],
    "late": ["model.fusion={name: late}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="AV-digits folder (generated when missing)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temp folder)")
    args = parser.parse_args()
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "av-digits"
        if not (data / "config.yaml").is_file():
            from av_digits import generate

            generate(data)
        out = args.out or Path(scratch) / "runs"
        results = run(data, out, names, args.seeds)
    print_table(results, args.seeds)


def run(data: Path, out: Path, variants: list[str], seeds: int) -> dict[str, list[float]]:
    """Test accuracy per model per seed."""
    config = data / "config.yaml"
    found: dict[str, list[float]] = {}
    quiet = Reporter(quiet=True)
    for seed in range(seeds):
        for index, variant in enumerate(variants):
            overrides = [*VARIANTS[variant], f"train.seed={seed}"]
            folder = out / f"seed{seed}" / variant
            if index == 0:  # the single-modality models and references, once per seed
                report = mmplug.compare(config, overrides, out=folder, reporter=quiet)
                for name, model in report["models"].items():
                    if name != FUSED:
                        found.setdefault(name, []).append(model["test"]["accuracy"])
                found.setdefault("chance", []).append(report["chance"]["accuracy"])
                accuracy = report["models"][FUSED]["test"]["accuracy"]
            else:
                run_dir = mmplug.train(config, overrides, out=folder / FUSED, reporter=quiet)
                results = json.loads((run_dir / "results.json").read_text())
                accuracy = results["test"]["accuracy"]
            found.setdefault(f"fused: {variant}", []).append(accuracy)
            print(f"seed {seed} {variant}: fused {accuracy:.4f}", flush=True)
    return found


def print_table(results: dict[str, Any], seeds: int) -> None:
    print(f"\nAV-digits test accuracy over {seeds} seed(s): mean (min .. max)")
    for name, values in results.items():
        mean = statistics.fmean(values)
        print(f"  {name:<28} {mean:.4f} ({min(values):.4f} .. {max(values):.4f})")


if __name__ == "__main__":
    main()
