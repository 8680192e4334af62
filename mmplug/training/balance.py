"""Balanced multimodal training: unimodal losses and gradient modulation.

Trained jointly on one loss, a fused model tends to learn from the modality that is fastest
to fit while the others stay starved (Wang et al. 2020, "What makes training multi-modal
classification networks hard?"; Peng et al. 2022, OGM-GE). Both remedies here work through
the model's unimodal heads (``model.unimodal_heads``, or the ``late`` fusion):

- **unimodal losses**: each key's head is scored on the samples that have the key, and
  ``train.unimodal_loss`` times the sum of those losses is added to the fused loss, so every
  encoder gets a gradient of its own (Gradient-Blending's auxiliary losses, with one weight);
- **gradient modulation** (OGM, Peng et al. 2022): each step, each key's score is
  ``s_m = exp(-L_m)`` (for cross-entropy, the geometric mean probability its head gives the
  true class), its ratio ``r_m = s_m / mean(s_j, j != m)``, and every gradient flowing into
  the encoder of a key that leads (``r_m > 1``) is scaled by ``1 - tanh(alpha (r_m - 1))``
  (``alpha`` is ``train.modulation``). The scaling is applied to the gradient of the
  encoder's output, which scales the gradient of each of its parameters by the same factor
  and is exact under gradient accumulation. OGM-GE's added gradient noise is not used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

from torch import Tensor

from mmplug.model.interfaces import EncoderOutput, Head
from mmplug.model.multimodal import ModelOutput, MultimodalModel


def unimodal_losses(
    model: MultimodalModel, output: ModelOutput, targets: Tensor
) -> dict[str, Tensor]:
    """Each unimodal head's loss over the samples that had its key (as the model saw them).

    Keys no sample of the batch had are left out.
    """
    heads = model.unimodal_heads
    if heads is None:
        return {}
    losses = {}
    for key, outputs in output.unimodal.items():
        rows = output.present[key]
        if bool(rows.any()):
            head = cast(Head, heads[key])
            losses[key] = head.loss(outputs[rows].float(), targets[rows])
    return losses


def modulation(losses: Mapping[str, float], alpha: float) -> dict[str, float]:
    """OGM's coefficient per key from its unimodal loss: below 1 for keys that lead.

    Args:
        losses: key -> this batch's unimodal loss (keys without samples left out).
        alpha: modulation strength; 0 turns it off (every coefficient 1).
    """
    coefficients = dict.fromkeys(losses, 1.0)
    if alpha <= 0 or len(losses) < 2:
        return coefficients
    scores = {key: math.exp(-loss) for key, loss in losses.items()}
    for key, score in scores.items():
        others = [value for other, value in scores.items() if other != key]
        ratio = score / max(sum(others) / len(others), 1e-12)
        if ratio > 1:
            coefficients[key] = 1.0 - math.tanh(alpha * (ratio - 1.0))
    return coefficients


def scale_gradients(
    features: Mapping[str, EncoderOutput], coefficients: Mapping[str, float]
) -> None:
    """Scale the gradients that will flow back into each key's encoder by its coefficient.

    Hooks the encoder outputs (``pooled``, and ``tokens`` where given) of the forward pass
    whose loss is about to be back-propagated.
    """
    for key, coefficient in coefficients.items():
        if coefficient == 1.0:
            continue
        feature = features[key]
        for tensor in (feature.pooled, feature.tokens):
            if tensor is not None and tensor.requires_grad:
                tensor.register_hook(_scaled(coefficient))  # type: ignore[no-untyped-call]


def _scaled(coefficient: float) -> Callable[[Tensor], Tensor]:
    def hook(grad: Tensor) -> Tensor:
        return grad * coefficient

    return hook
