"""Tabular and text together: a model that needs both modalities learns the task.

The label has four classes: (is the caption about a red object, is the first column
positive). The text tells one half, the table the other: either modality alone gets at most
half the answers right; only the fused model can get them all. Training
is a plain loop over mmplug's model API (``preprocess``, forward, ``head.loss``), with text
from mmplug-text (a from-scratch BERT whose vocabulary ``fit`` learns) and the ``concat``
fusion from mmplug-fusion.
"""

from __future__ import annotations

import random

import mmplug
import pytest
import torch

pytest.importorskip("mmplug_text", reason="the end-to-end test trains with mmplug-text")
pytest.importorskip("mmplug_fusion", reason="the end-to-end test fuses with mmplug-fusion")

CONFIG = {
    "encoders": {
        "tabular": {"name": "tabular-mlp", "num_features": 3, "hidden_dims": [32], "dim": 32},
        "text": {"name": "bert", "size": "bert-tiny", "vocab_size": 120, "max_length": 16},
    },
    "fusion": {"name": "concat"},
    "head": {"name": "classification", "num_classes": 4},
}
COLOURS = {"red": 1, "crimson": 1, "blue": 0, "green": 0}
THINGS = ["ball", "car", "kite", "box", "hat"]


def make_rows(count: int, seed: int) -> list[tuple[dict[str, object], int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        colour, thing = rng.choice(list(COLOURS)), rng.choice(THINGS)
        first = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 2.0)
        values = [first, rng.gauss(0, 1), rng.choice([rng.gauss(0, 1), None])]  # some missing
        label = 2 * COLOURS[colour] + int(first > 0)
        rows.append(({"text": f"a {colour} {thing}", "tabular": values}, label))
    return rows


def accuracy(model: mmplug.MultimodalModel, rows: list[tuple[dict[str, object], int]]) -> float:
    model.eval()
    with torch.no_grad():
        pipeline = mmplug.Pipeline.from_model(model)
        samples = [pipeline.load(values) for values, _ in rows]
        predicted = model(pipeline.collate(samples)).logits.argmax(-1)
    return float((predicted == torch.tensor([label for _, label in rows])).float().mean())


def test_tabular_and_text_train_together_to_solve_what_neither_can_alone() -> None:
    torch.manual_seed(0)
    model = mmplug.build_model(CONFIG)
    train, test = make_rows(256, seed=1), make_rows(128, seed=2)
    pipeline = mmplug.Pipeline.from_model(model)
    samples = [pipeline.load(values) for values, _ in train]
    model.fit_encoders(samples)  # the WordPiece vocabulary and the column statistics
    labels = torch.tensor([label for _, label in train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(8):
        model.train()
        order = torch.randperm(len(samples)).tolist()
        for start in range(0, len(order), 32):
            batch = [samples[i] for i in order[start : start + 32]]
            out = model(pipeline.collate(batch, train=True))
            loss = model.head.loss(out.logits, labels[order[start : start + 32]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert accuracy(model, test) >= 0.9
    # the task needs both: with the table absent, at most the text's half is known
    text_only = [({"text": values["text"]}, label) for values, label in test]
    assert accuracy(model, text_only) <= 0.6
