"""The examples a user runs stay runnable: `make demo` and the example config."""

from __future__ import annotations

import subprocess
import sys

from mmplug.assembly import build_model
from mmplug.plugins import PluginHost

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
    model = build_model(ROOT / "examples" / "toy.yaml", registry=toy_host.registry)
    assert model.keys == ["stats", "word"]
