"""Multiplicative fusions of pooled vectors: ``lmf``, ``tensor`` and ``film``.

Each reads ``features[key].pooled`` (``[B, D_m]``) only. ``S = sum(D_m)``, ``M`` modalities,
``d`` = ``dim``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmplug import ComponentError, EncoderOutput
from mmplug_fusion._common import BaseFusion, make_activation


class LowRankFusion(BaseFusion):
    """Low-rank Multimodal Fusion (Liu et al. 2018).

    Each modality's input gets a constant 1 appended, ``z_m = [x_m; 1]``, so the product
    keeps every unimodal (and lower-order) term. The fusion tensor is kept as ``rank``
    factors per modality, ``W_m^(i)`` (``(D_m + 1) x d``), and the output is
    ``sum_i lambda_i * prod_m (z_m W_m^(i)) + b``. An absent modality is ``z_m = [0; 1]``: only
    its constant row takes part, as if its features were zero, so its features have no
    influence and the other modalities' terms survive.

    Parameters: ``rank d (S + M) + rank + d``.

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``, the output size.
        rank: the number of factors per modality.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(self, input_dims: Mapping[str, int], dim: int = 256, rank: int = 4) -> None:
        super().__init__(input_dims)
        self.rank = rank
        # std 1/sqrt(D_m + 1) gives each factor's output unit scale, so the product of M of
        # them stays at unit scale (the reference code's xavier init shrinks it with every
        # modality added).
        self.factors = nn.ParameterDict(
            {
                key: nn.Parameter(torch.randn(rank, d + 1, dim) / math.sqrt(d + 1))
                for key, d in self.input_dims.items()
            }
        )
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, d]``."""
        self.check_inputs(features, present)
        product: Tensor | None = None
        for key, x in zip(self.keys, self.pooled(features, present), strict=True):
            z = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)  # [B, D_m + 1]
            factor = torch.einsum("bi,rio->rbo", z, self.factors[key])  # [rank, B, d]
            product = factor if product is None else product * factor
        assert product is not None  # BaseFusion guarantees at least one key
        return torch.einsum("r,rbo->bo", self.rank_weights, product) + self.bias


class TensorFusion(BaseFusion):
    """Tensor Fusion (Zadeh et al. 2017): the outer product of ``[1; h_m]`` over modalities.

    ``h_m`` is ``x_m``, or its linear projection to ``project_dim``. The flattened product
    ``[1; h_1] (x) ... (x) [1; h_M]`` holds the constant, every unimodal feature and every
    cross-modal product; a linear layer maps it to ``d``. An absent modality is ``[1; 0]``,
    its constant term only, so its features have no influence. The product has
    ``P = prod_m (p_m + 1)`` features, ``p_m`` = ``project_dim`` or ``D_m``.

    Parameters: ``(S + M) p`` (projections, when ``project_dim = p``) ``+ P d + d``.

    Args:
        input_dims: modality key -> ``D_m``.
        project_dim: project each modality to this size first; None uses ``x_m`` as is.
        dim: ``d``, the output size.
        max_features: the largest ``P`` allowed.
        dropout: dropout on the product.

    Raises:
        ComponentError: ``P`` is above ``max_features``; the message gives the sizes.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(
        self,
        input_dims: Mapping[str, int],
        project_dim: int | None = 32,
        dim: int = 256,
        max_features: int = 65_536,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims)
        sizes = {key: (project_dim or d) + 1 for key, d in self.input_dims.items()}
        total = math.prod(sizes.values())
        if total > max_features:
            factors = " x ".join(f"{size:,} ({key})" for key, size in sizes.items())
            hint = "lower project_dim" if project_dim else "set project_dim"
            raise ComponentError(
                f"tensor fusion would have {total:,} features (the product of size + 1 over "
                f"the modalities: {factors}), above max_features={max_features:,}; "
                f"{hint} or raise max_features"
            )
        self.project = (
            nn.ModuleDict({k: nn.Linear(d, project_dim) for k, d in self.input_dims.items()})
            if project_dim
            else None
        )
        self.product_features = total
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(total, dim)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, d]``."""
        self.check_inputs(features, present)
        product: Tensor | None = None
        for key, x in zip(self.keys, self.pooled(features, present), strict=True):
            h = x
            if self.project is not None:
                # The projection's bias would otherwise stand in for an absent modality.
                h = torch.where(present[key].bool().unsqueeze(-1), self.project[key](x), 0.0)
            z = torch.cat([h.new_ones(h.shape[0], 1), h], dim=-1)  # [B, p_m + 1]
            product = z if product is None else (product.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        assert product is not None  # BaseFusion guarantees at least one key
        fused: Tensor = self.out(self.dropout(product))
        return fused


class FiLMFusion(BaseFusion):
    """FiLM (Perez et al. 2018): a target modality modulated by the others.

    ``h = P x_t`` (or ``x_t`` when ``dim`` is None) for the target ``t``; the other
    modalities predict ``gamma`` and ``beta`` through one hidden layer,
    ``c = act(sum over present s != t of C_s x_s + b_c)``, ``[delta; beta] = G c + g``; the
    output is ``(1 + delta) * h + beta``. ``G`` and ``g`` start at zero, so at
    initialization the output is ``h`` exactly (``gamma = 1``, ``beta = 0``). An absent
    conditioning modality adds nothing to ``c`` (``C_s`` has no bias); an absent target is
    replaced by a learned vector, still modulated by the others.

    Parameters, with ``o`` = ``dim`` or ``D_t``, ``h`` = ``hidden_dim``:
    ``(D_t o + o)`` (when ``dim`` is set) ``+ (S - D_t) h + h + 2 h o + 2 o + o``.

    Args:
        input_dims: modality key -> ``D_m``.
        target: the modulated modality's key; None means the first key in sorted order.
        dim: project the target to this size first; None keeps ``x_t`` as is.
        hidden_dim: ``h``, the hidden size of the gamma/beta network.
        activation: ``act``.

    Raises:
        ComponentError: ``target`` is not one of the keys; the message lists them.
    """

    uses_tokens = False  # pooled only: the feature cache keeps no tokens for it

    def __init__(
        self,
        input_dims: Mapping[str, int],
        target: str | None = None,
        dim: int | None = None,
        hidden_dim: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__(input_dims)
        if target is None:
            target = self.keys[0]
        elif target not in self.input_dims:
            raise ComponentError(
                f"film target {target!r} is not a modality key of this model; "
                f"its keys are: {', '.join(self.keys)}"
            )
        self.target = target
        self.sources = [key for key in self.keys if key != target]
        target_dim = self.input_dims[target]
        self.output_dim = dim or target_dim
        self.project: nn.Module = nn.Linear(target_dim, dim) if dim else nn.Identity()
        self.condition = nn.ModuleDict(
            {key: nn.Linear(self.input_dims[key], hidden_dim, bias=False) for key in self.sources}
        )
        self.condition_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.act = make_activation(activation)
        self.film = nn.Linear(hidden_dim, 2 * self.output_dim)
        nn.init.zeros_(self.film.weight)  # identity at init: gamma = 1, beta = 0
        nn.init.zeros_(self.film.bias)
        self.empty = nn.Parameter(torch.zeros(self.output_dim))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (pooled ``[B, D_m]`` per key) into ``[B, output_dim]``."""
        batch = self.check_inputs(features, present)
        xs = dict(zip(self.keys, self.pooled(features, present), strict=True))
        hidden = self.condition_bias.expand(batch, -1)
        for key in self.sources:
            hidden = hidden + self.condition[key](xs[key])  # absent rows are zeros: adds 0
        delta, beta = self.film(self.act(hidden)).chunk(2, dim=-1)
        has_target = present[self.target].bool().unsqueeze(-1)
        h = torch.where(has_target, self.project(xs[self.target]), self.empty)
        fused: Tensor = (1 + delta) * h + beta
        return fused
