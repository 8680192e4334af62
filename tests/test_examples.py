"""The examples a user runs stay runnable: examples/forward_pass.py, the example configs and
the README's Python examples."""

from __future__ import annotations

import subprocess
import sys

import mmplug
from mmplug.plugins.host import PluginHost

from .conftest import ROOT


def test_forward_pass_demo_runs_and_reports_what_it_built() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "forward_pass.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "built from examples/toy.yaml" in out
    assert "classification (mmplug" in out
    assert "sample 3: present=none" in out  # a sample with every modality absent
    assert "loss against targets" in out


def test_example_config_builds(toy_host: PluginHost) -> None:
    model = mmplug.build_model(ROOT / "examples" / "toy.yaml", registry=toy_host.registry)
    assert model.keys == ["stats", "word"]


def test_multimodal_example_builds_and_runs_from_scratch() -> None:
    """examples/multimodal.yaml: text, image and audio through gated fusion, no download."""
    import numpy as np
    import torch
    from PIL import Image

    model = mmplug.build_model(ROOT / "examples" / "multimodal.yaml").eval()
    assert model.keys == ["audio", "image", "text"]
    tone = np.sin(np.arange(8000) / 8.0).astype(np.float32)
    rows = [
        {
            "text": "a red square",
            "image": Image.new("RGB", (64, 48), "red"),
            "audio": (tone, 16000),
        },
        {"text": "no picture, no sound"},
        {"image": Image.new("L", (32, 32))},
    ]
    pipeline = mmplug.Pipeline.from_model(model)
    samples = [pipeline.load(row) for row in rows]
    model.fit_encoders(samples)  # the from-scratch BERT learns its WordPiece vocabulary
    with torch.no_grad():
        out = model(pipeline.collate(samples))
    assert out.logits.shape == (3, 3) and torch.isfinite(out.logits).all()
    assert model.resolved is not None
    assert model.resolved.fusion.spec.distribution == "mmplug-fusion"


def test_pretrained_example_is_valid_against_the_installed_plugins() -> None:
    """examples/pretrained.yaml can't be built here (no network), but every name and
    parameter resolves, and its manifest paths are relative to the file."""
    from mmplug.model.config import load_config
    from mmplug.model.resolve import resolve_model
    from mmplug.plugins.loading import default_registry

    path = ROOT / "examples" / "pretrained.yaml"
    config = load_config(path)
    resolved = resolve_model(config, default_registry(), source=str(path))
    assert resolved.encoders["text"].params.pretrained == "bert-base-uncased"  # type: ignore[attr-defined]
    assert resolved.encoders["image"].spec.name == "resnet50"
    assert resolved.fusion.spec.name == "gated"
    assert (
        config.data is not None and config.data.train == ROOT / "examples" / "data" / "train.jsonl"
    )
    overridden = load_config(path, ["data.train=my/train.jsonl"])
    assert overridden.data is not None and str(overridden.data.train) == "my/train.jsonl"


def test_the_readmes_python_examples_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every ```python block of README.md, in order, in one interpreter from the repository
    root (the save example writes under a temporary folder instead of runs/)."""
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    code = "\n".join(blocks).replace('"runs/toy"', repr(str(tmp_path / "toy")))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "toy" / "model.safetensors").is_file()
