"""Balanced multimodal training: unimodal losses, their weights and gradient modulation.

Trained jointly on one loss, a fused model tends to learn from the modality that is fastest
to fit while the others stay starved (Wang et al. 2020, "What makes training multi-modal
classification networks hard?"; Peng et al. 2022, OGM-GE). The remedies here work through
the model's unimodal heads (``model.unimodal_heads``, or the ``late`` fusion):

- **unimodal losses**: each key's head is scored on the samples that have the key
  (:meth:`MultimodalModel.unimodal_losses`), and those losses, weighted by
  ``train.unimodal_loss`` (one weight, or one per key), are added to the fused loss, so
  every encoder gets a gradient of its own (Gradient-Blending's auxiliary losses);
- **Gradient-Blending weights** (``train.unimodal_loss: auto``, Wang et al. 2020, online):
  before each epoch from the third on, every head's weight (the fused head's too) is
  ``w_h ~ dG_h / dO_h^2`` over the epochs so far: ``dG_h`` is how much its validation loss
  fell since the first epoch, ``dO_h`` how much its overfitting (validation minus training
  loss) changed since then. A head whose validation loss did not fall gets weight 0; the
  weights are normalized to sum to the number of heads (all 1 when they are equal);
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

from torch import Tensor

from mmplug.model.interfaces import EncoderOutput
from mmplug.model.sections import per_key

#: The fused head among the weighted heads: ``""``, which no modality key can be (as in the
#: metrics' names: ``train_loss`` is the fused head's, ``train_loss_<key>`` a key's).
FUSED = ""
#: ``dO^2`` is at least this, so that a head that did not overfit at all gets a large but
#: finite weight.
MIN_OVERFIT_SQUARED = 1e-4


def loss_weights(
    setting: float | Mapping[str, float] | str,
    keys: list[str],
    history: list[dict[str, float]],
) -> dict[str, float]:
    """Each head's loss weight for the next epoch: the fused head's (:data:`FUSED`) and every
    key's.

    Args:
        setting: ``train.unimodal_loss``: one weight, one per key (1.0 for keys not
            listed), or ``"auto"`` (Gradient-Blending from the first and the last line of
            ``history``: per-epoch changes are too noisy to weigh by).
        keys: the model's modality keys.
        history: the metrics lines of the epochs so far (``train_loss``, ``val_loss`` and
            ``train_loss_<key>``, ``val_loss_<key>``).
    """
    if setting == "auto":
        return blend_weights([history[0], history[-1]] if len(history) > 1 else [], keys)
    assert not isinstance(setting, str)
    return {FUSED: 1.0, **{key: per_key(setting, key, 1.0) for key in keys}}


def blend_weights(lines: list[dict[str, float]], keys: list[str]) -> dict[str, float]:
    """Gradient-Blending's weights from two epochs' metrics lines (equal weights when
    there are fewer, when a loss is missing or not finite, or when no head generalized).

    For head ``h`` (the fused one: ``train_loss``/``val_loss``; key ``k``: ``train_loss_k``/
    ``val_loss_k``): ``dG = val(before) - val(after)``, ``dO = O(after) - O(before)`` with
    ``O = val - train``, and ``w_h = max(dG, 0) / max(dO^2, MIN_OVERFIT_SQUARED)``,
    normalized to sum to the number of heads.
    """
    heads = [FUSED, *keys]
    equal = dict.fromkeys(heads, 1.0)
    if len(lines) < 2:
        return equal
    raw = {}
    for head in heads:
        suffix = f"_{head}" if head else ""
        try:
            values = [(line[f"train_loss{suffix}"], line[f"val_loss{suffix}"]) for line in lines]
        except KeyError:
            return equal
        (train_before, val_before), (train_after, val_after) = values
        if not all(math.isfinite(v) for pair in values for v in pair):
            return equal
        gain = val_before - val_after
        overfit = (val_after - train_after) - (val_before - train_before)
        raw[head] = max(gain, 0.0) / max(overfit * overfit, MIN_OVERFIT_SQUARED)
    total = sum(raw.values())
    if total <= 0:
        return equal
    return {head: len(heads) * value / total for head, value in raw.items()}


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
