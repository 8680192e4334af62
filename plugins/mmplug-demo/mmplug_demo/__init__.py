"""mmplug-demo: ``mmplug demo``, the whole pipeline on a generated task that needs all three
modalities (text, image, audio), with the fused model compared to each modality alone.

This is the entry-point module (``[project.entry-points.mmplug] demo = "mmplug_demo"``): it
only adds the command, through the ``register_commands`` hook, and stays cheap to import.
The dataset (:mod:`mmplug_demo.dataset`) and the runs (:mod:`mmplug_demo.run`) are imported
when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

import mmplug

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for


@mmplug.hookimpl
def register_commands(cli: Any) -> None:
    command = cli.add_parser(
        "demo",
        help="generate a text+image+audio dataset, train fused and unimodal models, compare",
        description="Offline: write a synthetic dataset whose label needs all three "
        "modalities, train a fused model and one model per modality, print test accuracy.",
    )
    command.add_argument("--out", default="runs/demo", metavar="DIR", help="default: runs/demo")
    command.add_argument(
        "--fusion",
        default="mmplug-fusion:concat",
        help="the registered fusion to use, bare or dist:name (default: mmplug-fusion:concat)",
    )
    command.add_argument("--epochs", type=_positive, help="epochs per model (default: the demo's)")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from mmplug_demo.run import run_demo

    options = {"epochs": args.epochs} if args.epochs else {}
    run_demo(args.out, fusion=args.fusion, registry=args.host.registry, **options)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
