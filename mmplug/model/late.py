"""Core's ``late`` fusion: a weighted average of the unimodal heads' outputs.

Late fusion is the strong baseline of multimodal learning: each modality gets a predictor of
its own, and the model averages what they say. Here each key's head is trained with its own
loss (``train.unimodal_loss``) and the average's weights are learned (a softmax over the keys
a sample has), or equal. Registered in :mod:`mmplug.plugins.builtin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmplug.errors import ComponentError
from mmplug.model.interfaces import EncoderOutput, Fusion


class LateFusion(Fusion):
    """``sum over present m of w_m * y_m``, ``w`` a softmax over the present keys' weights.

    Each ``y_m`` ``[B, C]`` is key ``m``'s unimodal head output (logits, or values for
    regression). A sample with no modality at all gets a learned output of its own.

    Args:
        input_dims: key -> ``C``, the unimodal heads' output size (the same for every key).
        weights: ``learned`` (one weight per key, starting equal) or ``equal``.
    """

    combines: ClassVar[Literal["features", "outputs"]] = "outputs"

    def __init__(
        self, input_dims: Mapping[str, int], weights: Literal["learned", "equal"] = "learned"
    ) -> None:
        super().__init__()
        sizes = set(input_dims.values())
        if not input_dims or len(sizes) != 1:
            raise ComponentError(
                f"late fusion averages outputs of one size, got input_dims {dict(input_dims)}"
            )
        self.keys = sorted(input_dims)
        self.output_dim = sizes.pop()
        self.logit_weights = nn.Parameter(
            torch.zeros(len(self.keys)), requires_grad=weights == "learned"
        )
        #: The output for a sample with no modality at all (learned).
        self.nothing = nn.Parameter(torch.zeros(self.output_dim))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        """Average ``features[key].pooled`` (the heads' outputs) over each sample's keys."""
        outputs = torch.stack([features[key].pooled for key in self.keys], dim=1)  # [B, M, C]
        here = torch.stack([present[key].bool() for key in self.keys], dim=1)  # [B, M]
        anything = here.any(dim=1, keepdim=True)
        scores = self.logit_weights.to(outputs.dtype).expand(here.shape)
        # rows with nothing present: any finite scores (their result is replaced below)
        weights = scores.masked_fill(~here & anything, float("-inf")).softmax(dim=1)
        mixed = (weights.unsqueeze(-1) * torch.where(here.unsqueeze(-1), outputs, 0.0)).sum(1)
        return torch.where(anything, mixed, self.nothing.to(outputs.dtype))

    def weights(self) -> dict[str, float]:
        """Each key's weight when every key is present."""
        values = self.logit_weights.detach().softmax(dim=0).tolist()
        return {key: round(value, 4) for key, value in zip(self.keys, values, strict=True)}
