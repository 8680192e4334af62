"""What each data-loader worker receives, for the demo's fused model: before this layout the
loader's collate function held the model (its weights were pickled for every worker, every
epoch, under the spawn and forkserver start methods: the default on macOS, Windows and
Python 3.14 Linux); now it holds the data pipeline (tokenizer, transforms, filter bank).

Both are pickled in one run, side by side: the dataset plus the model (what the old collate
function carried) against the dataset plus the collate function workers get now.

Usage::

    python benchmarks/worker_payload.py [--rows 64] [--repeat 5]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import torch
from demo_setup import demo_setup
from timing import timed

from mmplug.data.pipeline import make_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="training rows generated")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        model, dataset = demo_setup(Path(folder), args.rows)
        loader = make_loader(dataset, batch_size=32, train=True, num_workers=2)
        payloads = {
            "with the model (before)": (loader.dataset, model),
            "with the pipeline (now)": (loader.dataset, loader.collate_fn),
        }
        sizes = {name: len(pickle.dumps(payload)) for name, payload in payloads.items()}
        seconds = {
            name: timed(lambda payload=payload: pickle.loads(pickle.dumps(payload)), args.repeat)
            for name, payload in payloads.items()
        }
    parameters = sum(p.numel() for p in model.parameters())
    print(f"demo fused model: {parameters:,} parameters; {args.rows} training rows")
    for name in payloads:
        print(
            f"  worker payload {name}: {sizes[name] / 1e3:,.1f} kB, "
            f"pickled and read back in {seconds[name] * 1e3:.1f} ms"
        )
    before, now = payloads
    print(
        f"  ratio: {sizes[before] / sizes[now]:,.0f}x smaller, "
        f"{seconds[before] / seconds[now]:,.0f}x faster to hand over"
    )


if __name__ == "__main__":
    main()
