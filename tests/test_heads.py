"""Core's heads, built by name through the same registry as any plugin's components."""

from __future__ import annotations

import pytest
import torch

from mmplug.model.build import build_component
from mmplug.model.config import ComponentConfig
from mmplug.model.interfaces import Head
from mmplug.model.resolve import resolve_component
from mmplug.plugins.loading import load_plugins

BATCH, INPUT = 6, 5


def build_head(name: str, **params: object) -> Head:
    registry = load_plugins(entry_points=False).registry
    issues: list = []
    resolved = resolve_component(
        registry, "head", ComponentConfig(name=name, **params), "model.head", issues
    )
    assert resolved is not None, issues
    return build_component(resolved, Head, input_dim=INPUT)


CASES = {
    "classification": ({"num_classes": 3}, torch.tensor([0, 1, 2, 0, 1, 2])),
    # every label both on and off somewhere, so that mAP is defined
    "multilabel": ({"num_labels": 4}, (torch.arange(BATCH)[:, None] + torch.arange(4)) % 2),
    "regression": ({}, torch.randn(BATCH)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_head_loss_is_finite_differentiable_and_metrics_compute(name: str) -> None:
    torch.manual_seed(0)
    params, targets = CASES[name]
    head = build_head(name, **params, hidden_dims=[7])
    fused = torch.randn(BATCH, INPUT, requires_grad=True)
    outputs = head(fused)
    assert outputs.shape == (BATCH, head.output_dim)
    loss = head.loss(outputs, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert fused.grad is not None and all(p.grad is not None for p in head.parameters())
    predictions = head.predict(outputs.detach())
    for metric in head.metrics().values():
        metric.update(predictions, targets)
        assert torch.isfinite(metric.compute()).all()


def test_classification_probabilities_and_metric_names() -> None:
    head = build_head("classification", num_classes=3)
    probabilities = head.predict(torch.randn(4, 3))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(4))
    assert set(head.metrics()) == {"accuracy", "macro_f1", "auroc"}


def test_classification_loss_is_cross_entropy() -> None:
    head = build_head("classification", num_classes=3)
    logits, targets = torch.randn(4, 3), torch.tensor([2, 0, 1, 1])
    expected = -torch.log_softmax(logits, -1)[torch.arange(4), targets].mean()
    torch.testing.assert_close(head.loss(logits, targets), expected)


def test_multilabel_uses_independent_sigmoids() -> None:
    head = build_head("multilabel", num_labels=2)
    outputs = torch.tensor([[0.0, 100.0]])
    torch.testing.assert_close(head.predict(outputs), torch.tensor([[0.5, 1.0]]))
    assert set(head.metrics()) == {"map", "f1"}


def test_regression_accepts_flat_targets_and_predicts_values() -> None:
    head = build_head("regression")
    outputs = torch.tensor([[1.0], [3.0]])
    torch.testing.assert_close(head.loss(outputs, torch.tensor([0.0, 1.0])), torch.tensor(2.5))
    assert head.predict(outputs).shape == (2,)
    assert set(head.metrics()) == {"mae", "rmse", "r2"}
    two = build_head("regression", num_targets=2)
    assert two.predict(torch.zeros(3, 2)).shape == (3, 2)
