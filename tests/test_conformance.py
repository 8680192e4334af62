"""Every component of this repository's packages passes the conformance kit (mmplug.testing).

The registry drives it: a component added to any package here is checked without touching
this file, as long as its modality has samples below and its required params are given.
"""

from __future__ import annotations

import math

import pytest

from mmplug.testing import Conformance


def _images() -> list[object]:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((48, 40))
    noise = Image.effect_noise((30, 52), 64).convert("RGB")
    return [noise, gradient, Image.merge("RGB", [gradient, gradient.rotate(90), gradient])]


def _clips() -> list[tuple[object, int]]:
    import numpy as np

    def tone(seconds: float, rate: int, hz: float) -> object:
        return 0.3 * np.sin(2 * math.pi * hz * np.arange(int(seconds * rate)) / rate)

    stereo = np.stack([tone(0.25, 8000, 220.0), tone(0.25, 8000, 330.0)])  # [channels, time]
    return [(tone(0.4, 16000, 440.0), 16000), (stereo, 8000)]


conformance = Conformance(
    samples={
        "text": ["a cat", "", "a much longer sentence than the others, with punctuation!"],
        "image": _images,
        "audio": _clips,
        "tabular": [[0.5, 1.0, 2.0], "3,,0", {"a": 1, "b": None, "c": -4.5}],
    },
    params={
        # heads: the required sizes
        "classification": {"num_classes": 3, "hidden_dims": [8]},
        "multilabel": {"num_labels": 4},
        "regression": {"num_targets": 2},
        # no network here: BERT from a size preset, with a vocabulary fitted on the samples
        "bert": {"size": "bert-tiny", "vocab_size": 64, "max_length": 16},
        # small inputs keep the checks fast; the architectures are as registered
        **{f"resnet{depth}": {"image_size": 32} for depth in (18, 34, 50, 101, 152)},
        "mel-cnn": {"channels": [4, 8], "n_mels": 16, "output_dim": 8},
        # LayerDrop skips random layers in training: off, so every parameter gets a gradient
        "wav2vec2": {"max_seconds": 0.5, "layer_drop": 0.0},
        "hubert": {"max_seconds": 0.5, "layer_drop": 0.0},
        "tabular-mlp": {"num_features": 3},
    },
    bad_values={
        "text": [3, ["a", "list"]],
        "image": [b"not an image", "/no/such/image.png"],
        "audio": ["/no/such/clip.wav", ([], 16000)],
        "tabular": ["1,two,3"],
    },
)


@conformance.parametrize()
def test_conformance(check) -> None:  # type: ignore[no-untyped-def]
    check()


def test_every_package_of_this_repository_is_checked() -> None:
    checked = {spec.distribution for spec in conformance.components()}
    expected = {"mmplug", "mmplug-text", "mmplug-image", "mmplug-audio", "mmplug-fusion"}
    assert expected | {"mmplug-tabular"} <= checked
    pytest.importorskip("mmplug_fusion")
