"""Attention over token sequences: ``transformer`` and ``cross-attention``.

Both attend over ``features[key].tokens`` (``[B, T_m, D_m]``, with ``mask`` ``[B, T_m]``), or
over ``pooled`` as a single token when a modality has no tokens. A token counts only if its
sample has the modality and its mask is True (:func:`~mmplug_fusion._common.token_inputs`).

PyTorch attention returns ``nan`` for a query whose keys are all masked, so neither fusion
ever builds such a row: the transformer always has its unmasked CLS token, and a
cross-attention row without a valid source token attends over the (zeroed, finite) padding
and its result is dropped.

No positional embeddings are added: encoders' tokens are taken to carry their own position
information. ``S = sum(D_m)``, ``M`` modalities, ``d`` = ``dim``, ``L`` = ``layers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from mmplug import ComponentError, EncoderOutput
from mmplug_fusion._common import BaseFusion, token_inputs


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ComponentError(f"heads ({heads}) must divide dim ({dim})")


class TransformerFusion(BaseFusion):
    """A transformer encoder over a learned CLS token and the modalities' tokens.

    The sequence is ``[CLS, tokens of keys[0], tokens of keys[1], ...]``: one token per
    modality (its projected ``pooled``), or with ``use_tokens`` every encoder token. Each
    token is ``P_m x + e_m`` (a projection to ``d`` plus a learned modality embedding). Absent
    modalities and masked tokens are key-padding-masked out; the output is the CLS token
    after ``L`` pre-norm layers (``d``-wide feed-forward of ``4 d``, GELU) and a final
    LayerNorm. A sample with no modality attends to CLS alone: a learned output.

    Parameters: ``S d + M d`` (projections) ``+ M d`` (modality embeddings) ``+ d`` (CLS)
    ``+ L (12 d^2 + 13 d) + 2 d``.

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``.
        layers: ``L``.
        heads: attention heads; must divide ``d``.
        dropout: dropout in attention and feed-forward layers.
        use_tokens: attend over every encoder token rather than one per modality.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        use_tokens: bool = False,
    ) -> None:
        super().__init__(input_dims)
        _check_heads(dim, heads)
        self.use_tokens = use_tokens
        self.uses_tokens = use_tokens  # without, pooled only: the feature cache keeps no tokens
        self.project = nn.ModuleDict({key: nn.Linear(d, dim) for key, d in self.input_dims.items()})
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(self.keys), dim))
        self.cls = nn.Parameter(0.02 * torch.randn(dim))
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=4 * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors can't be used with norm_first (PyTorch warns); padding masks suffice.
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (tokens ``[B, T_m, D_m]`` or pooled ``[B, D_m]``) into ``[B, d]``."""
        batch = self.check_inputs(features, present)
        sequence = [self.cls.expand(batch, 1, -1)]
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=self.cls.device)]
        for index, key in enumerate(self.keys):
            feature = features[key] if self.use_tokens else EncoderOutput(features[key].pooled)
            tokens, ok = token_inputs(feature, present[key])
            sequence.append(self.project[key](tokens) + self.modality_embedding[index])
            valid.append(ok)
        padding = ~torch.cat(valid, dim=1)  # True = ignore; never true at CLS
        out: Tensor = self.encoder(torch.cat(sequence, dim=1), src_key_padding_mask=padding)
        return out[:, 0]


class _CrossBlock(nn.Module):
    """Pre-norm multi-head attention: target tokens (queries) attend to one source's tokens."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, target: Tensor, source: Tensor, source_valid: Tensor) -> Tensor:
        """Attend from ``target`` ``[B, T, d]`` to ``source`` ``[B, S, d]``; ``[B, T, d]`` out.

        Args:
            target: the queries' tokens.
            source: the keys' and values' tokens.
            source_valid: ``[B, S]`` bool, the source tokens that may be attended to. A row
                with none gets zeros: no cross-modal update.
        """
        has_source = source_valid.any(dim=1)
        # Rows with no valid key would give nan; let them attend over their finite padding
        # instead and drop the result below.
        padding = ~source_valid & has_source.unsqueeze(1)
        keys = self.norm_source(source)
        out, _ = self.attention(
            self.norm_query(target), keys, keys, key_padding_mask=padding, need_weights=False
        )
        return torch.where(has_source[:, None, None], out, 0.0)


class _FeedForward(nn.Sequential):
    """Pre-norm position-wise feed-forward: LayerNorm, ``d -> 4d``, GELU, ``4d -> d``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * dim, dim),
            nn.Dropout(dropout),
        )


class _CrossLayer(nn.Module):
    """One crossmodal layer: every target attends to every other modality, then a feed-forward."""

    def __init__(self, keys: list[str], dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.keys = keys
        self.attend = nn.ModuleDict(
            {
                target: nn.ModuleDict(
                    {
                        source: _CrossBlock(dim, heads, dropout)
                        for source in keys
                        if source != target
                    }
                )
                for target in keys
            }
        )
        self.feed_forward = nn.ModuleDict({key: _FeedForward(dim, dropout) for key in keys})

    def forward(
        self, states: dict[str, Tensor], sources: dict[str, tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        """Update each target's states ``[B, T_t, d]`` from the sources ``([B, S, d], [B, S])``."""
        updated = {}
        for target in self.keys:
            query = states[target]
            x = query
            blocks = cast(nn.ModuleDict, self.attend[target])
            # Every source reads the same (pre-update) queries, so the source order is moot.
            for source in self.keys:
                if source != target:
                    x = x + blocks[source](query, *sources[source])
            updated[target] = x + self.feed_forward[target](x)
        return updated


class CrossAttentionFusion(BaseFusion):
    """MulT-style crossmodal attention (Tsai et al. 2019), for any number of modalities.

    Each modality's tokens are projected to ``d``. In each of ``L`` layers, every target
    modality's tokens (queries) attend to every other modality's projected input tokens
    (keys and values, as MulT uses the sources' low-level features at every layer), one
    attention block per ordered pair, the results added to the target's residual stream,
    then a feed-forward. Each modality is then pooled (LayerNorm, masked mean over its valid
    tokens; a learned placeholder when it has none), and the ``M`` pooled vectors are
    concatenated and projected to ``d``. MulT's per-modality self-attention transformer
    after the crossmodal layers is left out: encoders already contextualize their tokens.

    Parameters: ``S d + M d`` (projections) ``+ L (M (M - 1) (4 d^2 + 8 d) + M (8 d^2 + 7 d))``
    ``+ 2 M d`` (final norms) ``+ M d`` (placeholders) ``+ M d^2 + d`` (output).

    Args:
        input_dims: modality key -> ``D_m``.
        dim: ``d``.
        layers: ``L``.
        heads: attention heads; must divide ``d``.
        dropout: dropout in attention and feed-forward layers.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dims)
        _check_heads(dim, heads)
        self.project = nn.ModuleDict({key: nn.Linear(d, dim) for key, d in self.input_dims.items()})
        self.layers = nn.ModuleList(
            [_CrossLayer(self.keys, dim, heads, dropout) for _ in range(layers)]
        )
        self.norm = nn.ModuleDict({key: nn.LayerNorm(dim) for key in self.keys})
        self.placeholders = nn.ParameterDict(
            {key: nn.Parameter(torch.zeros(dim)) for key in self.keys}
        )
        self.out = nn.Linear(len(self.keys) * dim, dim)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Fuse ``features`` (tokens ``[B, T_m, D_m]`` or pooled ``[B, D_m]``) into ``[B, d]``."""
        self.check_inputs(features, present)
        valid: dict[str, Tensor] = {}
        states: dict[str, Tensor] = {}
        for key in self.keys:
            tokens, valid[key] = token_inputs(features[key], present[key])
            states[key] = self.project[key](tokens)
        sources = {key: (states[key], valid[key]) for key in self.keys}
        for layer in self.layers:
            states = layer(states, sources)
        pooled = []
        for key in self.keys:
            ok = valid[key].unsqueeze(-1)  # [B, T, 1]
            count = ok.sum(dim=1)  # [B, 1]
            total = torch.where(ok, self.norm[key](states[key]), 0.0).sum(dim=1)
            mean = total / count.clamp(min=1)
            pooled.append(torch.where(count > 0, mean, self.placeholders[key]))
        fused: Tensor = self.out(torch.cat(pooled, dim=-1))
        return fused
