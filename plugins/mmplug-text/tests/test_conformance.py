"""mmplug's conformance kit over everything mmplug-text registers, with variants that take
other code paths (pooling, partly frozen layers)."""

from __future__ import annotations

from mmplug.testing import Check, Conformance

conformance = Conformance(
    "mmplug-text",
    samples={"text": ["a cat", "", "a much longer sentence than the others, with punctuation!"]},
    # no network here: BERT from a size preset, with a vocabulary fitted on the samples
    params={"bert": {"size": "bert-tiny", "vocab_size": 64, "max_length": 16}},
    variants={"bert": [{"pooling": "cls"}, {"pooling": "pooler", "trainable_layers": 1}]},
    bad_values={"text": [3, ["a", "list"]]},
)


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()
