"""The commands that train and use models: ``train``, ``evaluate``, ``predict`` and ``demo``.

:mod:`mmplug.cli` declares their arguments; these functions run them. Unlike the listing
commands they import torch, when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmplug.errors import MmplugError


def cmd_train(args: argparse.Namespace) -> int:
    from mmplug.progress import Reporter
    from mmplug.training import train

    config, overrides = split_config_and_overrides(args.args)
    if config is None and args.resume is None:
        raise MmplugError("train needs a CONFIG file (or --resume RUN_DIR)")
    run = train(
        config,
        overrides,
        out=args.out,
        resume=args.resume,
        reporter=Reporter(quiet=args.quiet),
    )
    if args.quiet:
        print(run)
    return 0


def split_config_and_overrides(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [KEY=VALUE ...]``: a first word without ``=`` is the config file."""
    if words and "=" not in words[0]:
        return words[0], list(words[1:])
    return None, list(words)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmplug.predictor import load

    predictor = load(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    result = predictor.evaluate(args.data, batch_size=args.batch_size)
    classes = predictor.labels.classes
    if args.json:
        data: dict[str, Any] = {"loss": result.loss, **result.metrics, "count": result.count}
        if result.confusion is not None:
            data["confusion"] = {"classes": classes, "matrix": result.confusion}
        data["skipped"] = [row.to_json() for row in result.skipped]
        print(json.dumps(data, indent=2))
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
    """Rows: true class; columns: predicted class, numbered to stay narrow."""
    names = [*classes, *(f"<{i}>" for i in range(len(classes), len(matrix)))]
    width = max(len(n) for n in names)
    cell = max(3, *(len(str(v)) for row in matrix for v in row))
    print("confusion matrix (rows: true, columns: predicted):")
    print(f"  {'':>{width + 4}} " + " ".join(f"{i:>{cell}}" for i in range(len(names))))
    for index, (name, row) in enumerate(zip(names, matrix, strict=True)):
        print(f"  {index:>2}  {name:<{width}} " + " ".join(f"{v:>{cell}}" for v in row))


def cmd_predict(args: argparse.Namespace) -> int:
    from mmplug.predictor import load

    sample = parse_sample_options(args.extra)
    if (args.data is None) == (not sample):
        raise MmplugError(
            "predict needs either --data MANIFEST or one sample given as --KEY VALUE "
            "(e.g. --text 'a photo' --image cat.jpg)"
        )
    predictor = load(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    if sample:
        unknown = sorted(set(sample) - set(predictor.keys))
        if unknown:
            raise MmplugError(
                f"the model has no modality {', '.join(unknown)}; give --KEY VALUE for its "
                f"keys: {', '.join(predictor.keys)}"
            )
        print(json.dumps(predictor.predict(sample, root=Path.cwd())[0], indent=2))
        return 0
    lines = predictor.predict_manifest(args.data, batch_size=args.batch_size)
    count = 0
    if args.out is None:
        for line in lines:
            print(json.dumps(line))
        return 0
    from mmplug.files import staged_file

    with staged_file(args.out) as staging, staging.open("w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
            count += 1
    print(f"wrote {count} predictions to {args.out}", file=sys.stderr)
    return 0


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


def cmd_demo(args: argparse.Namespace) -> int:
    from mmplug.demo import run_demo
    from mmplug.progress import Reporter

    options = {"epochs": args.epochs} if args.epochs else {}
    run_demo(args.out, fusion=args.fusion, reporter=Reporter(), **options)
    return 0
