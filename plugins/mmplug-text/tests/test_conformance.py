"""mmplug's conformance kit over everything mmplug-text registers, with each pooling (the
kit's own variants) and partly frozen layers."""

from __future__ import annotations

from mmplug.testing import Check, Conformance

conformance = Conformance(
    "mmplug-text",
    samples={"text": ["a cat", "", "a much longer sentence than the others, with punctuation!"]},
    # no network here: BERT from a size preset, with a vocabulary fitted on the samples
    params={"bert": {"size": "bert-tiny", "vocab_size": 64, "max_length": 16}},
    # the kit tries pooling: cls and pooler by itself; this one freezes all but the top layer
    variants={"bert": [{"pooling": "pooler", "trainable_layers": 1}]},
    skip_variants={
        "bert": {
            "size": "null reads a checkpoint from the hub (no network here), and the other "
            "presets are bert-tiny deeper and wider: the same code, only slower"
        }
    },
    bad_values={"text": [3, ["a", "list"]]},
)


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()
