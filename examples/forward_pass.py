"""Build a model by name from examples/toy.yaml and run one forward pass.

The components come from examples/toy_plugin.py, added to the installed plugins the same way
an entry point would add them. Run with ``python examples/forward_pass.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

import mmplug

HERE = Path(__file__).resolve().parent


def load_toy_plugin() -> object:
    spec = importlib.util.spec_from_file_location("toy_plugin", HERE / "toy_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    torch.manual_seed(0)
    host = mmplug.load_plugins()
    host.add(load_toy_plugin(), name="toy", distribution="toy-plugin", version="example")
    config = HERE / "toy.yaml"
    model = mmplug.build_model(config, registry=host.registry)
    print(f"built from {config.relative_to(HERE.parent)}:")
    print(model.describe())

    rows = [  # manifest-like values; a missing key is an absent modality
        {"stats": "0.5,1.0,-0.2,3.0", "word": "cat"},
        {"word": "hippopotamus"},
        {"stats": [0.0, 0.1, 0.2, 0.3]},
        {},
    ]
    pipeline = mmplug.Pipeline.from_model(model)  # each key's loader and preprocessor
    samples = [pipeline.load(row) for row in rows]
    batch = pipeline.collate(samples)
    model.eval()
    with torch.no_grad():
        output = model(batch)
    probabilities = model.head.predict(output.logits)
    targets = torch.tensor([0, 1, 2, 0])
    loss = model.head.loss(output.logits, targets)

    print(f"\nforward pass on {batch.size} samples:")
    for index in range(len(rows)):
        has = [key for key in model.keys if bool(batch.present[key][index])]
        probs = ", ".join(f"{p:.3f}" for p in probabilities[index].tolist())
        print(f"  sample {index}: present={has or 'none'}  probabilities=[{probs}]")
    print(f"  fused: {tuple(output.fused.shape)}  logits: {tuple(output.logits.shape)}")
    print(f"  loss against targets {targets.tolist()}: {loss.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
