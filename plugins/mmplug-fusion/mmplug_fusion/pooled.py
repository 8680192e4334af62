"""Fusions of pooled vectors: ``concat``, ``sum``, ``attention`` and ``gated``.

Each reads ``features[key].pooled`` (``[B, D_m]``) only. ``S = sum(D_m)``, ``M`` modalities,
``d`` = ``dim``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmplug import EncoderOutput
from mmplug_fusion._common import BaseFusion, make_activation, masked_softmax


class ConcatFusion(BaseFusion):
    """Concatenation of pooled features and presence indicators, then an MLP or a projection.

    The concatenation is ``[v_1; ...; v_M; p_1, ..., p_M]`` in sorted key order, where
    ``v_m`` is ``x_m`` if the sample has modality ``m`` and a learned placeholder ``c_m``
    otherwise, and ``p_m`` is 1 or 0. It then goes through the hidden layers (linear,
    optional LayerNorm, activation, dropout) and a final linear layer to ``dim``.

    Parameters: ``S`` placeholders, plus the layers' weights from ``S + M`` inputs.

    Args:
        input_dims: modality key -> ``D_m``.
        dim: size of the final linear layer; None returns the last hidden layer (or the
            bare concatenation, ``S + M`` wide).
        hidden_dims: sizes of the hidden layers.
        activation: the hidden layers' activation.
        layer_norm: LayerNorm after each hidden linear layer.
        dropout: dropout after each hidden layer.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int | None = 256,
        hidden_dims: list[int] | None = None,
        activation: str = "relu",
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims)
        # Zeros at first, but learned, and told apart from a real zero vector by p_m.
        self.placeholders = nn.ParameterDict(
            {key: nn.Parameter(torch.zeros(d)) for key, d in self.input_dims.items()}
        )
        width = sum(self.input_dims.values()) + len(self.keys)
        layers: list[nn.Module] = []
        for hidden in hidden_dims or []:
            layers.append(nn.Linear(width, hidden))
            if layer_norm:
                layers.append(nn.LayerNorm(hidden))
            layers += [make_activation(activation), nn.Dropout(dropout)]
            width = hidden
        if dim is not None:
            layers.append(nn.Linear(width, dim))
            width = dim
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, output_dim]``."""
        self.check_inputs(features, present)
        parts = [
            torch.where(
                present[key].bool().unsqueeze(-1), features[key].pooled, self.placeholders[key]
            )
            for key in self.keys
        ]
        parts.append(self.presence(present).to(parts[0].dtype))
        fused: Tensor = self.net(torch.cat(parts, dim=-1))
        return fused


class SumFusion(BaseFusion):
    """The classic linear fusion ``act(sum over present m of W_m x_m + b)``.

    Each ``W_m`` (``d x D_m``) is bias-free and ``b`` is shared, so an absent modality
    contributes exactly nothing (no per-modality bias leaks through). With two modalities
    and ``relu`` this is ``relu(W_t t + W_i i + b)``; a sample with no modality gets
    ``act(b)``.

    Parameters: ``S d + d``.

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``, the output size.
        activation: ``act``.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(
        self, input_dims: Mapping[str, int], dim: int = 256, activation: str = "relu"
    ) -> None:
        super().__init__(input_dims)
        self.project = nn.ModuleDict(
            {key: nn.Linear(d, dim, bias=False) for key, d in self.input_dims.items()}
        )
        self.bias = nn.Parameter(torch.zeros(dim))
        self.act = make_activation(activation)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, d]``."""
        batch = self.check_inputs(features, present)
        total = self.bias.expand(batch, -1)
        # pooled() zeroed the absent rows and W_m has no bias, so they add exactly 0.
        for key, x in zip(self.keys, self.pooled(features, present), strict=True):
            total = total + self.project[key](x)
        fused: Tensor = self.act(total)
        return fused


class AttentionFusion(BaseFusion):
    """A softmax-weighted sum of per-modality projections, weights over present modalities.

    ``h_m = P_m x_m + p_m`` (``d``), score ``s_m = q . tanh(A h_m + a)`` (additive attention
    with parameters shared by the modalities), ``alpha = softmax over present m of s_m``,
    output ``sum_m alpha_m h_m``; a learned vector when nothing is present.

    Parameters: ``S d + M d`` (projections) ``+ d^2 + 2d`` (scorer, when ``M > 1``)
    ``+ d`` (empty).

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``, the common size and the output size.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256) -> None:
        super().__init__(input_dims)
        self.project = nn.ModuleDict({key: nn.Linear(d, dim) for key, d in self.input_dims.items()})
        # A softmax over one modality is always 1: no scorer, so no parameter sits idle.
        self.scorer = (
            nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
            if len(self.keys) > 1
            else None
        )
        self.empty = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, d]``."""
        self.check_inputs(features, present)
        xs = self.pooled(features, present)
        h = torch.stack([self.project[k](x) for k, x in zip(self.keys, xs, strict=True)], dim=1)
        mask = self.presence(present)
        fused = h.sum(dim=1)  # one modality: its own projection
        if self.scorer is not None:
            scores = self.scorer(h).squeeze(-1)  # [B, M]
            weights = masked_softmax(scores, mask, dim=1)  # exactly 0 for absent modalities
            fused = (weights.unsqueeze(-1) * h).sum(dim=1)
        return torch.where(mask.any(dim=1, keepdim=True), fused, self.empty)


class GatedFusion(BaseFusion):
    """The Gated Multimodal Unit (Arevalo et al. 2017) generalized to M modalities.

    ``h_m = tanh(W_m x_m)``; gate logits ``g = W_z [x_1; ...; x_M] + b_z`` (``[M, d]``, from
    all inputs, absent ones zeroed); ``z = softmax over present m of g_m``, per dimension;
    output ``sum_m z_m * h_m``, a learned vector when nothing is present. With two
    modalities the softmax is the paper's sigmoid gate: ``z h_1 + (1 - z) h_2``.

    Parameters: ``S d`` (``W_m``) ``+ S M d + M d`` (gate, when ``M > 1``) ``+ d`` (empty).

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``, the size of each ``h_m`` and of the output.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256) -> None:
        super().__init__(input_dims)
        self.hidden = nn.ModuleDict(
            {key: nn.Linear(d, dim, bias=False) for key, d in self.input_dims.items()}
        )
        # A softmax over one modality is always 1: no gate, so no parameter sits idle.
        self.gate = (
            nn.Linear(sum(self.input_dims.values()), len(self.keys) * dim)
            if len(self.keys) > 1
            else None
        )
        self.empty = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, d]``."""
        batch = self.check_inputs(features, present)
        xs = self.pooled(features, present)
        h = torch.stack(
            [torch.tanh(self.hidden[k](x)) for k, x in zip(self.keys, xs, strict=True)], dim=1
        )  # [B, M, d]
        mask = self.presence(present)
        fused = h.sum(dim=1)  # one modality: its own h
        if self.gate is not None:
            logits = self.gate(torch.cat(xs, dim=-1)).view(batch, len(self.keys), self.output_dim)
            gates = masked_softmax(logits, mask.unsqueeze(-1), dim=1)
            fused = (gates * h).sum(dim=1)
        return torch.where(mask.any(dim=1, keepdim=True), fused, self.empty)
