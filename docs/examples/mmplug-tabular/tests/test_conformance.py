"""mmplug-tabular against mmplug's conformance checks: one test per component and check."""

from mmplug.testing import Conformance

conformance = Conformance(
    "mmplug-tabular",
    samples={"tabular": [[0.5, 1.0, 2.0], "3,,0", {"a": 1, "b": None, "c": -4.5}]},
    params={"tabular-mlp": {"num_features": 3}},
    variants={"tabular-mlp": [{"hidden_dims": []}]},
    bad_values={"tabular": ["1,two,3", [1.0, float("inf")], 42]},
)


@conformance.parametrize()
def test_conformance(check):
    check()
