"""Core's task heads: classification, multilabel and regression (registered in ``builtin``)."""

from __future__ import annotations

import itertools

import torch
import torchmetrics
from torch import Tensor, nn
from torch.nn import functional as F

from mmplug.errors import ConfigError
from mmplug.model.interfaces import Head


def mlp(input_dim: int, hidden_dims: list[int], output_dim: int, dropout: float) -> nn.Sequential:
    """Linear layers with GELU between them, dropout before each; no activation at the end."""
    layers: list[nn.Module] = []
    dims = [input_dim, *hidden_dims]
    for d_in, d_out in itertools.pairwise(dims):
        layers += [nn.Dropout(dropout), nn.Linear(d_in, d_out), nn.GELU()]
    layers += [nn.Dropout(dropout), nn.Linear(dims[-1], output_dim)]
    return nn.Sequential(*layers)


def _size(name: str, value: int | None) -> int:
    """A head's output count, which training fills in from the data when the config has none."""
    if value is None:
        raise ConfigError(
            f"{name} is not set: give it in the config, or let mmplug train take it from the "
            "training data's labels"
        )
    return value


class _MLPHead(Head):
    def __init__(self, input_dim: int, output_dim: int, hidden_dims: list[int], dropout: float):
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.net = mlp(input_dim, hidden_dims, output_dim, dropout)

    def forward(self, fused: Tensor) -> Tensor:
        """``fused`` ``[B, F]`` -> ``[B, C]``."""
        return self.net(fused)  # type: ignore[no-any-return]


class ClassificationHead(_MLPHead):
    """Logits ``[B, num_classes]``; cross-entropy against class indices ``[B]``."""

    task = "classification"

    def __init__(
        self,
        input_dim: int,
        num_classes: int | None,
        hidden_dims: list[int] | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
    ):
        num_classes = _size("num_classes", num_classes)
        super().__init__(input_dim, num_classes, hidden_dims or [], dropout)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets.long(), label_smoothing=self.label_smoothing)

    def predict(self, outputs: Tensor) -> Tensor:
        """Class probabilities ``[B, num_classes]``."""
        return outputs.softmax(dim=-1)

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        n = self.num_classes
        return {
            "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=n),
            "macro_f1": torchmetrics.F1Score(task="multiclass", num_classes=n, average="macro"),
            "auroc": torchmetrics.AUROC(task="multiclass", num_classes=n),
        }


class MultilabelHead(_MLPHead):
    """Logits ``[B, num_labels]``; binary cross-entropy against 0/1 targets ``[B, num_labels]``."""

    task = "multilabel"

    def __init__(
        self,
        input_dim: int,
        num_labels: int | None,
        hidden_dims: list[int] | None = None,
        dropout: float = 0.0,
    ):
        num_labels = _size("num_labels", num_labels)
        super().__init__(input_dim, num_labels, hidden_dims or [], dropout)
        self.num_labels = num_labels

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))

    def predict(self, outputs: Tensor) -> Tensor:
        """Independent label probabilities ``[B, num_labels]``."""
        return torch.sigmoid(outputs)

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        n = self.num_labels
        return {
            "map": torchmetrics.AveragePrecision(task="multilabel", num_labels=n, average="macro"),
            "f1": torchmetrics.F1Score(task="multilabel", num_labels=n, average="macro"),
        }


class RegressionHead(_MLPHead):
    """Values ``[B, num_targets]``; mean squared error against ``[B]`` or ``[B, num_targets]``."""

    task = "regression"

    def __init__(
        self,
        input_dim: int,
        num_targets: int = 1,
        hidden_dims: list[int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(input_dim, num_targets, hidden_dims or [], dropout)
        self.num_targets = num_targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))

    def predict(self, outputs: Tensor) -> Tensor:
        """The values: ``[B]`` for one target, ``[B, num_targets]`` otherwise."""
        return outputs.squeeze(-1) if self.num_targets == 1 else outputs

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        return {
            "mae": torchmetrics.MeanAbsoluteError(),
            "rmse": torchmetrics.MeanSquaredError(squared=False),
            "r2": torchmetrics.R2Score(),  # averages over targets when there are several
        }
