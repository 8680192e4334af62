"""Pieces every strategy shares: the base class, input sanitizing and the masked softmax.

Absence is enforced with ``torch.where`` everywhere, never by multiplying with the presence
mask: ``0 * nan`` is ``nan``, and a caller may hand us anything in an absent row. Selecting
finite values *before* any computation also keeps gradients finite (a ``where`` after a
computation that produced ``nan`` still back-propagates ``0 * nan``).

Shapes: ``B`` batch, ``M`` modalities, ``D_m`` modality ``m``'s input size, ``T`` tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmplug import ComponentError, EncoderOutput, Fusion

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``gelu``, ``tanh``, ``silu``, ``identity``)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ComponentError(
            f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}"
        ) from None


class BaseFusion(Fusion):
    """A :class:`mmplug.Fusion` over a fixed, sorted set of modality keys.

    Args:
        input_dims: modality key -> ``D_m``, as assembly wires it.

    Attributes:
        keys: the modality keys, sorted; every loop over modalities follows this order.
        input_dims: key -> ``D_m``, in that order.
    """

    def __init__(self, input_dims: Mapping[str, int]) -> None:
        super().__init__()
        if not input_dims:
            raise ComponentError("a fusion needs at least one modality (input_dims is empty)")
        for key, dim in input_dims.items():
            if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise ComponentError(f"input_dims[{key!r}] must be a positive int, got {dim!r}")
        self.keys: list[str] = sorted(input_dims)
        self.input_dims: dict[str, int] = {key: input_dims[key] for key in self.keys}

    def check_inputs(
        self, features: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> int:
        """Check that every key is given and return the batch size ``B``."""
        missing = [k for k in self.keys if k not in features or k not in present]
        if missing:
            raise ComponentError(
                f"{type(self).__name__} was built for keys {', '.join(self.keys)} but got no "
                f"features or presence for {', '.join(missing)}"
            )
        return int(present[self.keys[0]].shape[0])

    def presence(self, present: Mapping[str, Tensor]) -> Tensor:
        """``[B, M]`` bool, column ``m`` for ``keys[m]``."""
        return torch.stack([present[key].bool() for key in self.keys], dim=1)

    def pooled(
        self, features: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> list[Tensor]:
        """Each key's pooled features ``[B, D_m]`` with absent rows replaced by exact zeros."""
        return [
            torch.where(present[key].bool().unsqueeze(-1), features[key].pooled, 0.0)
            for key in self.keys
        ]


def token_inputs(feature: EncoderOutput, present: Tensor) -> tuple[Tensor, Tensor]:
    """A modality's tokens and which of them are valid, safe to attend over.

    Falls back to ``pooled`` as a single token when the encoder gave no tokens (or no sample
    in the batch has the modality). A token is valid only if the sample is present and the
    encoder's mask says so; invalid tokens are replaced by zeros.

    Args:
        feature: ``pooled`` ``[B, D]``, ``tokens`` ``[B, T, D]`` or None, ``mask`` ``[B, T]``.
        present: ``[B]`` bool.

    Returns:
        ``tokens`` ``[B, T, D]`` (``T = 1`` for the fallback) and ``valid`` ``[B, T]`` bool.
    """
    here = present.bool().unsqueeze(-1)
    if feature.tokens is None or feature.mask is None:
        tokens, valid = feature.pooled.unsqueeze(1), here
    else:
        tokens, valid = feature.tokens, feature.mask.bool() & here
    return torch.where(valid.unsqueeze(-1), tokens, 0.0), valid


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax of ``scores`` over the positions where ``mask`` is True, along ``dim``.

    Masked positions get weight exactly 0, whatever their score (even nan); a slice with no
    True position gets all zeros instead of the ``nan`` a softmax over ``-inf`` gives.

    Args:
        scores: any shape.
        mask: bool, broadcastable to ``scores``.
        dim: the axis to normalize over.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    # A slice that is all -inf would softmax to nan; it is zeroed below anyway.
    filled = torch.where(mask.any(dim, keepdim=True), filled, 0.0)
    return torch.where(mask, filled.softmax(dim), 0.0)
