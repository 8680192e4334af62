"""The ``tabular-mlp`` encoder: standardized features and missing-value indicators, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmplug import DataError, Encoder, EncoderOutput
from torch import Tensor, nn


class TabularMLP(Encoder):
    """Rows ``[n, F]`` (NaN = missing) -> pooled ``[n, dim]``.

    ``fit`` learns each column's mean and standard deviation from the training rows; they are
    buffers, so they travel with the weights. A missing value becomes the column mean (0 after
    standardizing) and a per-column indicator tells the network it was missing.

    Args:
        num_features: ``F``.
        hidden_dims: hidden layer sizes.
        dim: ``D``.
        dropout: after each hidden layer.
        freeze: no parameter gets gradients; the encoder stays in eval mode.
    """

    modality = "tabular"
    deterministic_preprocess = True  # stacking rows: frozen, its outputs can be cached

    def __init__(
        self,
        num_features: int,
        hidden_dims: Sequence[int] = (64,),
        dim: int = 64,
        dropout: float = 0.0,
        freeze: bool = False,
    ):
        super().__init__()
        self.num_features = num_features
        self.output_dim = dim
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        layers: list[nn.Module] = []
        size = 2 * num_features  # values and missing indicators
        for hidden in hidden_dims:
            layers += [nn.Linear(size, hidden), nn.GELU(), nn.Dropout(dropout)]
            size = hidden
        layers.append(nn.Linear(size, dim))
        self.net = nn.Sequential(*layers)
        if freeze:  # no gradients, and eval mode even while the model trains
            self.freeze_modules()

    def fit(self, raws: list[Any]) -> None:
        """Learn each column's mean and standard deviation, ignoring missing values."""
        values = self.preprocess(raws)["values"]
        known = ~values.isnan()
        count = known.sum(0).clamp(min=1)
        filled = torch.where(known, values, 0.0)
        mean = filled.sum(0) / count
        var = (torch.where(known, values - mean, 0.0) ** 2).sum(0) / count
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt().clamp(min=1e-6))

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        for index, raw in enumerate(raws):
            if raw.shape != (self.num_features,):
                raise DataError(
                    f"tabular-mlp: row {index} has {raw.numel()} columns, "
                    f"expected num_features={self.num_features}"
                )
        return {"values": torch.stack(raws)}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values = inputs["values"].to(self.mean.dtype)
        missing = values.isnan()
        standardized = torch.where(missing, 0.0, (values - self.mean) / self.std)
        features = torch.cat([standardized, missing.to(values.dtype)], dim=-1)
        return EncoderOutput(pooled=self.net(features))
