"""The commands that train and use models: ``train``, ``compare``, ``evaluate`` and
``predict``.

Unlike the listing commands they import torch, when they run (not when the command line is
parsed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmplug.errors import MmplugError


def add_running_commands(commands: Any) -> None:
    """``train``, ``compare``, ``evaluate``, ``predict``."""
    cmd = commands.add_parser(
        "train",
        help="train a model from a config; writes a run directory",
        description="Train the model a config describes on its data section's manifests. "
        "Writes a run directory: config.yaml, labels.json, metrics.jsonl, best/ and last/ "
        "checkpoints, training.png.",
    )
    cmd.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [KEY=VALUE ...]",
        help="a YAML or JSON config, then dotted overrides (train.epochs=20); with --resume "
        "the config may be left out",
    )
    cmd.add_argument("--out", metavar="DIR", help="the run directory (default: runs/<time>)")
    cmd.add_argument("--resume", metavar="DIR", help="continue a run from its last/ checkpoint")
    cmd.add_argument("--quiet", action="store_true", help="print only the run directory")
    cmd.set_defaults(run=cmd_train)

    cmd = commands.add_parser(
        "compare",
        help="train the fused model and each modality alone; compare them on the test split",
        description="Train the config's fused model and one model per modality key (that "
        "encoder alone, same settings) into one folder, then print their test metrics next "
        "to chance and the late average of the single-modality models. Writes compare.json "
        "and compare.png; rerun with the same --out to continue.",
    )
    cmd.add_argument(
        "args", nargs="+", metavar="CONFIG [KEY=VALUE ...]", help="a config, then overrides"
    )
    cmd.add_argument("--out", metavar="DIR", help="the folder (default: runs/compare-<time>)")
    cmd.add_argument("--quiet", action="store_true", help="print only the table")
    cmd.set_defaults(run=cmd_compare)

    cmd = commands.add_parser("evaluate", help="a trained run's metrics on a labelled manifest")
    _run_dir_arguments(cmd)
    cmd.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL or CSV, labelled")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=cmd_evaluate)

    cmd = commands.add_parser(
        "predict",
        help="predict a manifest, or one sample given as --KEY VALUE",
        description="Predict every row of a manifest (JSON lines: row, label, probabilities), "
        "or one sample whose values are given per modality key: --text 'a dog barks' "
        "--image dog.jpg. Modalities not given are absent.",
    )
    _run_dir_arguments(cmd)
    cmd.add_argument("--data", metavar="MANIFEST", help="JSONL or CSV to predict")
    cmd.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COLUMN",
        help="copy this manifest column (an id, say) into every output line; repeat it, or "
        "give several separated by commas",
    )
    cmd.add_argument("--out", metavar="FILE", help="write JSON lines here (default: stdout)")
    cmd.set_defaults(run=cmd_predict, extra=[])


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run_dir_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by mmplug train")
    cmd.add_argument("--checkpoint", choices=("best", "last"), default="best", help="default: best")
    cmd.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    cmd.add_argument("--batch-size", type=_positive, default=32, help="default: 32")


# -- helpers ---------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from mmplug.training.progress import Reporter
    from mmplug.training.train import train

    config, overrides = split_config_and_overrides(args.args)
    if config is None and args.resume is None:
        raise MmplugError("train needs a CONFIG file (or --resume RUN_DIR)")
    run = train(
        config,
        overrides,
        registry=args.host.registry,
        out=args.out,
        resume=args.resume,
        reporter=Reporter(quiet=args.quiet),
    )
    if args.quiet:
        print(run)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import time

    from mmplug.training.compare import compare, table
    from mmplug.training.progress import Reporter

    config, overrides = split_config_and_overrides(args.args)
    if config is None:
        raise MmplugError("compare needs a CONFIG file first")
    out = args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    report = compare(
        config, overrides, registry=args.host.registry, out=out, reporter=Reporter(quiet=args.quiet)
    )
    if args.quiet:
        print("\n".join(table(report)).lstrip())
    return 0


def split_config_and_overrides(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [KEY=VALUE ...]``: a first word without ``=`` is the config file."""
    if words and "=" not in words[0]:
        return words[0], list(words[1:])
    return None, list(words)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmplug.runs.predictor import load

    predictor = load(
        args.run_dir, args.host.registry, checkpoint=args.checkpoint, device=args.device
    )
    result = predictor.evaluate(args.data, batch_size=args.batch_size)
    classes = list(getattr(predictor.task, "classes", ()))
    if args.json:
        data: dict[str, Any] = {"loss": result.loss, **result.metrics, "count": result.count}
        if result.confusion is not None:
            data["confusion"] = {"classes": classes, "matrix": result.confusion}
        data["skipped"] = [row.to_json() for row in result.skipped]
        print(strict_json(data, indent=2))
        return 0
    print(f"{args.data}: {result.count} rows")
    for name, value in {"loss": result.loss, **result.metrics}.items():
        print(f"  {name:<10} {value:.4f}")
    if result.confusion is not None:
        print_confusion(result.confusion, classes)
    if result.skipped:
        print(f"skipped {len(result.skipped)} row(s) that could not be read:", file=sys.stderr)
        for row in result.skipped:
            print(f"  row {row.row}: {row.error}", file=sys.stderr)
    return 0


def print_confusion(matrix: list[list[int]], classes: Sequence[str]) -> None:
    """Rows: true class, by number and name; columns: predicted class, by number (to stay
    narrow). Classes named by their own numbers (``0``, ``1``, ...) are shown once."""
    names = [*classes, *(f"<{i}>" for i in range(len(classes), len(matrix)))]
    numbered = all(name == str(index) for index, name in enumerate(names))
    labels = [f"{i:>2}" if numbered else f"{i:>2}  {name}" for i, name in enumerate(names)]
    width = max(len(label) for label in labels)
    cell = max(3, *(len(str(v)) for row in matrix for v in row))
    print("confusion matrix (rows: true, columns: predicted):")
    print(f"  {'':<{width}} " + " ".join(f"{i:>{cell}}" for i in range(len(names))))
    for label, row in zip(labels, matrix, strict=True):
        print(f"  {label:<{width}} " + " ".join(f"{v:>{cell}}" for v in row))


def cmd_predict(args: argparse.Namespace) -> int:
    from mmplug.runs.predictor import load

    sample = parse_sample_options(args.extra)
    if (args.data is None) == (not sample):
        raise MmplugError(
            "predict needs either --data MANIFEST or one sample given as --KEY VALUE "
            "(e.g. --text 'a photo' --image cat.jpg)"
        )
    keep = [column.strip() for value in args.keep for column in value.split(",") if column.strip()]
    if keep and args.data is None:
        raise MmplugError("--keep copies manifest columns: it goes with --data MANIFEST")
    predictor = load(
        args.run_dir, args.host.registry, checkpoint=args.checkpoint, device=args.device
    )
    if sample:
        unknown = sorted(set(sample) - set(predictor.keys))
        if unknown:
            raise MmplugError(
                f"the model has no modality {', '.join(unknown)}; give --KEY VALUE for its "
                f"keys: {', '.join(predictor.keys)}"
            )
        print(strict_json(predictor.predict(sample, root=Path.cwd())[0], indent=2))
        return 0
    lines = predictor.predict_manifest(args.data, keep=keep, batch_size=args.batch_size)
    count = 0
    if args.out is None:
        for line in lines:
            print(strict_json(line))
        return 0
    from mmplug.files import staged_file

    with staged_file(args.out) as staging, staging.open("w") as handle:
        for line in lines:
            handle.write(strict_json(line) + "\n")
            count += 1
    print(f"wrote {count} predictions to {args.out}", file=sys.stderr)
    return 0


def strict_json(data: Any, **options: Any) -> str:
    """JSON that any reader accepts: a metric that is not a number (NaN, e.g. an AUROC with
    one class present) is written ``null``, not Python's non-standard ``NaN``."""
    return json.dumps(_finite_or_null(data), allow_nan=False, **options)


def _finite_or_null(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_null(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite_or_null(value) for value in data]
    return data


def parse_sample_options(words: Sequence[str]) -> dict[str, str]:
    """``--text "a cat" --image cat.jpg`` -> ``{"text": "a cat", "image": "cat.jpg"}``."""
    sample: dict[str, str] = {}
    items = list(words)
    while items:
        option = items.pop(0)
        key, eq, value = option.partition("=")
        if not key.startswith("--") or len(key) < 3:
            raise MmplugError(f"unexpected argument {option!r}; samples are given as --KEY VALUE")
        if not eq:
            if not items:
                raise MmplugError(f"{option} needs a value")
            value = items.pop(0)
        sample[key[2:].replace("-", "_")] = value
    return sample
