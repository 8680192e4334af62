"""Core's own components (the heads) pass the conformance kit, and every package of this
repository runs the kit over its own components in its own tests/test_conformance.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmplug.testing import Check, Conformance

ROOT = Path(__file__).resolve().parent.parent

conformance = Conformance(
    "mmplug",
    params={
        "classification": {"num_classes": 3, "hidden_dims": [8]},
        "multilabel": {"num_labels": 4},
        "regression": {"num_targets": 2},
    },
    variants={
        "classification": [{"label_smoothing": 0.1, "dropout": 0.2}],
        "regression": [{"num_targets": 1}],
    },
)


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()


PACKAGES = sorted(
    [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("docs/examples/*/pyproject.toml")]
)


@pytest.mark.parametrize("pyproject", PACKAGES, ids=lambda path: path.parent.name)
def test_every_package_runs_the_kit_over_its_own_components(pyproject: Path) -> None:
    name = re.search(r'^name = "([^"]+)"', pyproject.read_text(), re.M)
    assert name is not None
    test = pyproject.parent / "tests" / "test_conformance.py"
    assert test.is_file(), f"{pyproject.parent.name} has no tests/test_conformance.py"
    assert (
        f'Conformance(\n    "{name[1]}"' in test.read_text()
        or f'Conformance("{name[1]}"' in test.read_text()
    )
