"""Does fusion earn its keep on real data? Fused variants against each modality alone, on
AV-digits (benchmarks/av_digits.py), over several seeds.

For each seed it trains the image-only and audio-only models once and every fused variant
once, all with the settings of AV-digits' config, and prints test accuracy as mean and spread
(min to max) over the seeds, next to chance and the late average of the single-modality
models (:mod:`mmplug.training.compare`). Figures go to docs/fusion-benchmark.md by hand.

Usage::

    python benchmarks/fusion_benchmark.py [--data /tmp/av-digits] [--seeds 3] [--out DIR]
        [--variants joint,unimodal,ogm,blend,late] [--fusions gated,sum,...]

With ``--out`` kept, a rerun reuses every finished run (``mmplug compare`` and ``mmplug
train --resume`` continue where they stopped): a new variant trains only itself.
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
    "joint": ["model.unimodal_heads=false"],  # one loss: no balancing at all
    "unimodal": ["model.unimodal_heads=true"],  # mmplug's default with two or more keys
    "ogm": ["model.unimodal_heads=true", "train.modulation=0.5"],
    "blend": ["model.unimodal_heads=true", "train.unimodal_loss=auto"],
    "late": ["model.fusion={name: late}"],
}
#: The variant that mmplug's defaults train.
DEFAULT = "unimodal"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="AV-digits folder (generated when missing)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--fusions",
        default="",
        help="also train the default (unimodal heads) with each of these registered fusions "
        "in place of concat, e.g. gated,sum,attention (variants fusion-<name>)",
    )
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temp folder)")
    args = parser.parse_args()
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    for fusion in (name.strip() for name in args.fusions.split(",") if name.strip()):
        VARIANTS[f"fusion-{fusion}"] = [f"model.fusion.name={fusion}"]
        names.append(f"fusion-{fusion}")
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
                run_dir = folder / FUSED
                if not (run_dir / "results.json").is_file():
                    where = {"resume": run_dir} if run_dir.is_dir() else {"out": run_dir}
                    mmplug.train(config, overrides, reporter=quiet, **where)
                results = json.loads((run_dir / "results.json").read_text())
                accuracy = results["test"]["accuracy"]
            found.setdefault(f"fused: {variant}", []).append(accuracy)
            print(f"seed {seed} {variant}: fused {accuracy:.4f}", flush=True)
    return found


def print_table(results: dict[str, Any], seeds: int) -> None:
    """Mean and range per model, then each fused variant's margin over the best single
    modality and over the late average, seed by seed."""
    print(f"\nAV-digits test accuracy over {seeds} seed(s): mean (min .. max), spread")
    for name, values in results.items():
        mean = statistics.fmean(values)
        low, high = min(values), max(values)
        print(f"  {name:<28} {mean:.4f} ({low:.4f} .. {high:.4f})  {high - low:.4f}")
    singles = [name for name in results if name.endswith(" only")]
    if not singles:
        return
    best = max(singles, key=lambda name: statistics.fmean(results[name]))
    print(f"\nmargins per seed, fused minus {best} (the best single modality) | minus late average")
    for name, values in results.items():
        if not name.startswith("fused: "):
            continue
        over_best = [v - b for v, b in zip(values, results[best], strict=False)]
        over_late = [v - a for v, a in zip(values, results["late average"], strict=False)]
        marker = "  (mmplug's default)" if name == f"fused: {DEFAULT}" else ""
        print(f"  {name:<28} {_margins(over_best)} | {_margins(over_late)}{marker}")


def _margins(values: list[float]) -> str:
    return f"{statistics.fmean(values):+.4f} ({min(values):+.4f} .. {max(values):+.4f})"


if __name__ == "__main__":
    main()
