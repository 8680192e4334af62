"""Two defaults of the training pipeline, each timed against its alternative in one run.

On the demo's fused model (bert-tiny, resnet18 at 32 px, mel-cnn, concat; see docs/demo.md)
and a small generated demo dataset:

- the AdamW step with ``foreach=True`` vs one kernel per tensor (torch's CPU default, which
  ``mmplug.training.optim`` keeps: on a 2-core CPU the two are within noise of each other);
- one pass of loading and preprocessing the training split (the ``DataLoader`` over the
  data pipeline, no model step) with ``data.num_workers`` 0 (the default) vs 2.

Usage::

    python benchmarks/training_step.py [--rows 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from demo_setup import demo_setup
from timing import timed

from mmplug.data.pipeline import make_loader
from mmplug.model.sections import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="training rows generated")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        model, dataset = demo_setup(Path(folder), args.rows)

        parameters = sum(p.numel() for p in model.parameters())
        print(f"model: {parameters:,} parameters in {len(list(model.parameters()))} tensors")
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        settings = TrainConfig()
        optimizers = {
            foreach: torch.optim.AdamW(list(model.parameters()), lr=settings.lr, foreach=foreach)
            for foreach in (True, False)
        }
        samples: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat * 4):  # interleaved, so that load changes hit both alike
            for foreach, optimizer in optimizers.items():
                start = time.perf_counter()
                optimizer.step()
                samples[foreach].append(time.perf_counter() - start)
        steps = {foreach: statistics.median(times[1:]) for foreach, times in samples.items()}
        print(
            f"AdamW step: foreach {steps[True] * 1e3:.1f} ms, per tensor "
            f"{steps[False] * 1e3:.1f} ms ({steps[False] / steps[True]:.2f}x)"
        )

        passes = {}
        for workers in (0, 2):
            loader = make_loader(dataset, batch_size=32, train=True, num_workers=workers)
            passes[workers] = timed(lambda loader=loader: list(loader), max(1, args.repeat // 2))
        print(
            f"loading + preprocessing {args.rows} rows: 0 workers {passes[0]:.2f} s, 2 workers "
            f"{passes[2]:.2f} s ({passes[0] / passes[2]:.2f}x)"
        )


if __name__ == "__main__":
    main()
