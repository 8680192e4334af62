"""mmplug's conformance kit over every fusion mmplug-fusion registers, for 1, 2 and 3
modalities: shapes, key order, a row alone against the batch, no influence of whatever
absent rows and padding hold, one learned output for empty rows, gradients and float64.
Sizes are shrunk to keep it fast; the variants take the other code paths."""

from __future__ import annotations

from mmplug.testing import Check, Conformance

SMALL_ATTENTION = {"dim": 8, "heads": 2, "layers": 1}

conformance = Conformance(
    "mmplug-fusion",
    params={
        "concat": {"dim": 8},
        "sum": {"dim": 8},
        "attention": {"dim": 8},
        "gated": {"dim": 8},
        "lmf": {"dim": 8, "rank": 2},
        "tensor": {"dim": 8, "project_dim": 3},
        "film": {"hidden_dim": 8},
        "transformer": SMALL_ATTENTION,
        "cross-attention": SMALL_ATTENTION,
    },
    variants={
        "concat": [{"dim": None, "hidden_dims": [6], "layer_norm": True}, {"dim": None}],
        "film": [{"dim": 4, "target": "a"}],
        "tensor": [{"project_dim": None}],
        "transformer": [{"use_tokens": True}],
    },
)


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()
