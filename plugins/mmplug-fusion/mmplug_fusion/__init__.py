"""mmplug-fusion: fusion strategies for any number of modalities, all honouring ``present``.

This is the entry-point module, so it stays cheap to import: the ``register_fusions``
hookimpl and the pydantic params models only. The torch classes are named by
``"module:Class"`` strings and imported when a model is built:

- :mod:`mmplug_fusion.pooled`: ``concat``, ``sum``, ``attention``, ``gated``;
- :mod:`mmplug_fusion.multiplicative`: ``lmf``, ``tensor``, ``film``;
- :mod:`mmplug_fusion.sequence`: ``transformer``, ``cross-attention``.

Every strategy takes the ``input_dims`` assembly wires in (modality key -> ``D``), visits the
keys in sorted order, and gives an absent modality no influence on that sample's output; a
sample with no modality at all gets a learned, finite output.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, PositiveInt, model_validator

from mmplug import Params, RegisterFn, hookimpl

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for

Activation = Literal["relu", "gelu", "tanh", "silu", "identity"]


class ConcatParams(Params):
    """Concatenation of pooled features, then an optional MLP and/or a projection."""

    dim: int | None = Field(
        default=256,
        ge=1,
        description="Size of the final linear layer; null returns the MLP output (or the bare "
        "concatenation, with placeholders and presence indicators) as is.",
    )
    hidden_dims: list[PositiveInt] = Field(
        default_factory=list, description="Sizes of the MLP's hidden layers, before `dim`."
    )
    activation: Activation = Field(default="relu", description="Activation of the hidden layers.")
    layer_norm: bool = Field(default=False, description="LayerNorm after each hidden linear layer.")
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer."
    )


class SumParams(Params):
    """act(sum over present m of W_m x_m + b)."""

    dim: int = Field(default=256, ge=1, description="Size every modality is projected to.")
    activation: Activation = Field(default="relu", description="Activation of the sum.")


class AttentionParams(Params):
    """Softmax-weighted sum of per-modality projections."""

    dim: int = Field(default=256, ge=1, description="Size every modality is projected to.")


class GatedParams(Params):
    """Gated Multimodal Unit for M modalities."""

    dim: int = Field(default=256, ge=1, description="Size of each modality's hidden vector h_m.")


class LMFParams(Params):
    """Low-rank Multimodal Fusion."""

    dim: int = Field(default=256, ge=1, description="Output size.")
    rank: int = Field(default=4, ge=1, description="Rank of the low-rank weight tensor.")


class TensorParams(Params):
    """Tensor Fusion: outer product of [1; h_m] over modalities."""

    project_dim: int | None = Field(
        default=32,
        ge=1,
        description="Project each modality to this size before the outer product; null uses "
        "the encoder's output as is.",
    )
    dim: int = Field(
        default=256, ge=1, description="Output size (a linear layer after the product)."
    )
    max_features: int = Field(
        default=65_536,
        ge=1,
        description="Refuse to build when the outer product, the product of (size + 1) over "
        "modalities, has more features than this.",
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the outer product.")


class FiLMParams(Params):
    """FiLM: one modality modulated by the others."""

    target: str | None = Field(
        default=None,
        description="Modality key whose features are modulated; null means the first key in "
        "sorted order.",
    )
    dim: int | None = Field(
        default=None,
        ge=1,
        description="Project the target's features to this size first; null keeps them as is "
        "(the output is then the target's features exactly at initialization).",
    )
    hidden_dim: int = Field(
        default=256, ge=1, description="Hidden size of the network predicting gamma and beta."
    )
    activation: Activation = Field(
        default="relu", description="Activation of that network's hidden layer."
    )


class _AttentionStackParams(Params):
    dim: int = Field(default=256, ge=1, description="Model size of the attention layers.")
    layers: int = Field(default=2, ge=1, description="Number of layers.")
    heads: int = Field(default=4, ge=1, description="Attention heads; must divide `dim`.")
    dropout: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Dropout in attention and feed-forward layers."
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        return self


class TransformerParams(_AttentionStackParams):
    """A transformer encoder over a CLS token and the modalities' tokens."""

    use_tokens: bool = Field(
        default=False,
        description="Feed every encoder token (with its mask) instead of one pooled token per "
        "modality.",
    )


class CrossAttentionParams(_AttentionStackParams):
    """MulT-style pairwise cross-modal attention."""


@hookimpl
def register_fusions(register: RegisterFn) -> None:
    register(
        "concat",
        "mmplug_fusion.pooled:ConcatFusion",
        params=ConcatParams,
        summary="Concatenate pooled features (learned placeholders for absent ones), then MLP",
    )
    register(
        "sum",
        "mmplug_fusion.pooled:SumFusion",
        params=SumParams,
        summary="Linear fusion act(sum of W_m x_m over present modalities + b)",
    )
    register(
        "attention",
        "mmplug_fusion.pooled:AttentionFusion",
        params=AttentionParams,
        summary="Softmax attention over the present modalities' projections",
    )
    register(
        "gated",
        "mmplug_fusion.pooled:GatedFusion",
        params=GatedParams,
        summary="Gated Multimodal Unit (Arevalo et al. 2017) for M modalities",
    )
    register(
        "lmf",
        "mmplug_fusion.multiplicative:LowRankFusion",
        params=LMFParams,
        summary="Low-rank Multimodal Fusion (Liu et al. 2018)",
    )
    register(
        "tensor",
        "mmplug_fusion.multiplicative:TensorFusion",
        params=TensorParams,
        summary="Tensor Fusion (Zadeh et al. 2017): outer product of [1; h_m]",
    )
    register(
        "film",
        "mmplug_fusion.multiplicative:FiLMFusion",
        params=FiLMParams,
        summary="FiLM (Perez et al. 2018): a target modality modulated by the others",
    )
    register(
        "transformer",
        "mmplug_fusion.sequence:TransformerFusion",
        params=TransformerParams,
        summary="Transformer encoder over a CLS token and per-modality tokens; output at CLS",
    )
    register(
        "cross-attention",
        "mmplug_fusion.sequence:CrossAttentionFusion",
        params=CrossAttentionParams,
        summary="MulT-style pairwise cross-modal attention (Tsai et al. 2019)",
    )
