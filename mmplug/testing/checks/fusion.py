"""Checks of a fusion, over modalities of different sizes and token counts (1, 2 and 3 of
them where each adds a case, 2 or 3 otherwise).

A fusion that combines outputs (``combines = "outputs"``) gets what assembly hands it
instead: one size for every key and pooled outputs only. The features are what assembly
hands a fusion: per key, ``pooled`` ``[B, D]`` with zero rows
for absent samples, ``tokens`` ``[B, T, D]`` and a ``mask`` that is False on padding and on
absent rows, and ``tokens=None`` for a key no sample of the batch has. The batches mix every
key present, each key absent alone, and nothing present.

One bug fails one check: NaN or inf in the output is reported by ``finite`` (rows with
something present) or ``all_absent_finite`` (rows with nothing), and the other checks
compare only where their reference is finite and skip gradients of a non-finite output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from mmplug.model.interfaces import EncoderOutput, Fusion
from mmplug.model.multimodal import combines_outputs
from mmplug.testing.checks.common import backward, build, close, finite

if TYPE_CHECKING:
    from mmplug.testing import Case

#: Input sizes for 1, 2 and 3 modalities (distinct on purpose); key ``i`` has ``i + 2``
#: tokens per sample, so no fusion can assume equal lengths.
DIMS = {"a": 3, "b": 5, "c": 7}
#: ``C``, every unimodal head's output size, for fusions that combine outputs.
OUTPUTS = 4
#: What an absent row, a padded token or an absent row's mask may hold: it must not matter.
GARBAGE = (float("nan"), float("inf"), float("-inf"), 1e6, None)  # None: large random values


def dims_of(count: int) -> dict[str, int]:
    return dict(list(DIMS.items())[:count])


def mixed_rows(dims: dict[str, int]) -> dict[str, Tensor]:
    """``present``: every key; each key absent alone (with 2+ keys); nothing."""
    keys = list(dims)
    rows = [set(keys), *({k for k in keys if k != gone} for gone in keys if len(keys) > 1), set()]
    return {key: torch.tensor([key in row for row in rows]) for key in keys}


def fake_features(
    dims: dict[str, int],
    present: dict[str, Tensor],
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    tokens: bool = True,
) -> dict[str, EncoderOutput]:
    """Random features shaped as assembly scatters them (see the module's docstring); with
    ``tokens`` False, pooled only (as unimodal heads' outputs reach a late fusion)."""
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for index, (key, dim) in enumerate(dims.items()):
        here = present[key]
        batch = here.shape[0]
        # drawn in float32, then cast: float64 features hold the same values
        pooled = torch.randn(batch, dim, generator=generator).to(dtype)
        pooled = torch.where(here[:, None], pooled, 0.0)
        if not tokens or not bool(here.any()):
            features[key] = EncoderOutput(pooled)
            continue
        sequence = torch.randn(batch, index + 2, dim, generator=generator).to(dtype)
        mask = torch.rand(batch, index + 2, generator=generator) < 0.7
        mask[:, 0] = True  # like most encoders: one real token at least per present sample
        mask &= here[:, None]
        sequence = torch.where(mask[..., None], sequence, 0.0)
        features[key] = EncoderOutput(pooled, sequence, mask)
    return features


def fusion_for(case: Case, count: int) -> tuple[Fusion, dict[str, int]]:
    """The case's fusion over ``count`` keys of different sizes; for a fusion that combines
    the unimodal heads' outputs, of one size (``C``), as assembly builds it."""
    dims = dims_of(count)
    if combines_outputs(case.spec.load_factory()):
        dims = dict.fromkeys(dims, OUTPUTS)
    return build(case, Fusion, input_dims=dims), dims


def takes_tokens(fusion: Fusion) -> bool:
    """Whether assembly hands this fusion tokens (encoder features) or pooled head outputs."""
    return not combines_outputs(fusion)


def fuse(
    case: Case, fusion: Fusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]
) -> Tensor:
    out = fusion(features, present)
    assert isinstance(out, Tensor), (
        f"{case.who()}: forward returned {type(out).__name__}, expected a Tensor"
    )
    return out


def fuse_eval(
    case: Case, fusion: Fusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]
) -> Tensor:
    with torch.no_grad():
        return fuse(case, fusion.eval(), features, present)


def check_fusion_output_shape(case: Case) -> None:
    """``[B, output_dim]`` for 1, 2 and 3 modalities of different sizes."""
    for count in (1, 2, 3):
        fusion, dims = fusion_for(case, count)
        present = mixed_rows(dims)
        out = fuse_eval(
            case, fusion, fake_features(dims, present, seed=0, tokens=takes_tokens(fusion)), present
        )
        expected = (len(present["a"]), fusion.output_dim)
        assert tuple(out.shape) == expected, (
            f"{case.who()}: with {count} modalities {dims}, output has shape "
            f"{tuple(out.shape)}, expected {expected}"
        )


def check_fusion_key_order(case: Case) -> None:
    """The order of the input dicts' keys changes nothing."""
    fusion, dims = fusion_for(case, 3)
    present = mixed_rows(dims)
    features = fake_features(dims, present, seed=1, tokens=takes_tokens(fusion))
    forward = fuse_eval(case, fusion, features, present)
    shuffled = fuse_eval(
        case,
        fusion,
        {k: features[k] for k in reversed(list(features))},
        {k: present[k] for k in reversed(list(present))},
    )
    close(case, "the output depends on the order of the input dict's keys", shuffled, forward)


def check_fusion_batch_independent(case: Case) -> None:
    """In eval mode each row alone gives what it gives in the batch."""
    for count in (1, 2, 3):
        fusion, dims = fusion_for(case, count)
        present = mixed_rows(dims)
        features = fake_features(dims, present, seed=2, tokens=takes_tokens(fusion))
        batched = fuse_eval(case, fusion, features, present)
        for row in range(batched.shape[0]):
            one = {key: _row(out, row) for key, out in features.items()}
            alone = fuse_eval(case, fusion, one, {k: p[row : row + 1] for k, p in present.items()})
            close(
                case,
                f"with {count} modalities, row {row} alone differs from it in the batch",
                alone[0],
                batched[row],
            )


def _row(feature: EncoderOutput, row: int) -> EncoderOutput:
    pick = slice(row, row + 1)
    if feature.tokens is None or feature.mask is None:
        return EncoderOutput(feature.pooled[pick])
    return EncoderOutput(feature.pooled[pick], feature.tokens[pick], feature.mask[pick])


def check_fusion_finite(case: Case) -> None:
    """No NaN or inf in the output of a row with something present, for 1, 2 and 3
    modalities (rows with nothing present are ``all_absent_finite``'s)."""
    for count in (1, 2, 3):
        fusion, dims = fusion_for(case, count)
        present = mixed_rows(dims)
        out = fuse_eval(
            case, fusion, fake_features(dims, present, seed=3, tokens=takes_tokens(fusion)), present
        )
        finite(
            case,
            f"with {count} modalities, the output for rows with something present",
            out[_anything(present)],
        )


def _anything(present: dict[str, Tensor]) -> Tensor:
    """``[B]``: whether a row has any modality present."""
    return torch.stack(list(present.values())).any(0)


def check_fusion_absent_has_no_influence(case: Case) -> None:
    """What an absent row holds, what its mask says and what padded tokens hold (NaN, inf,
    huge or random values) change nothing, for 1, 2 and 3 modalities.

    Each modality's absent rows, then its padded tokens, are filled alone, before all of them
    at once: a failure names the first modality and part whose filling changed the output.
    """
    for count in (1, 2, 3):
        fusion, dims = fusion_for(case, count)
        present = mixed_rows(dims)
        features = fake_features(dims, present, seed=3, tokens=takes_tokens(fusion))
        clean = fuse_eval(case, fusion, features, present)
        for where, fills in _places(features):
            for seed, garbage in enumerate(GARBAGE):
                dirty = {
                    key: _corrupt(out, present[key], garbage, seed, fills.get(key, NOWHERE))
                    for key, out in features.items()
                }
                what = "random values" if garbage is None else garbage
                close(
                    case,
                    f"with {count} modalities {dims}, {what} in {where} changed the output",
                    fuse_eval(case, fusion, dirty, present),
                    clean,
                )


class Fill(NamedTuple):
    """Where ``_corrupt`` puts garbage."""

    rows: bool  # an absent row's pooled, tokens and mask
    padding: bool  # the padded tokens of a present row


ROWS = Fill(rows=True, padding=False)
PADDING = Fill(rows=False, padding=True)
EVERYWHERE = Fill(rows=True, padding=True)
NOWHERE = Fill(rows=False, padding=False)


def _places(features: dict[str, EncoderOutput]) -> list[tuple[str, dict[str, Fill]]]:
    """``(where, key -> what to fill)``: each key's absent rows, then its padded tokens (if
    it has tokens), then, with 2+ keys, both for every key."""
    places = []
    for key, out in features.items():
        places.append((f"the absent rows of modality {key!r} (pooled, tokens, mask)", {key: ROWS}))
        if out.tokens is not None:
            places.append((f"the padded tokens of modality {key!r}", {key: PADDING}))
    if len(features) > 1:
        places.append(
            ("every modality's absent rows and padded tokens", dict.fromkeys(features, EVERYWHERE))
        )
    return places


def _corrupt(
    feature: EncoderOutput,
    present: Tensor,
    garbage: float | None,
    seed: int,
    fill: Fill,
) -> EncoderOutput:
    """``feature`` with ``garbage`` where ``fill`` says: what must not matter."""
    if fill == NOWHERE:
        return feature
    generator = torch.Generator().manual_seed(100 + seed)

    def junk(like: Tensor) -> Tensor:
        if garbage is None:
            return 100 * torch.randn(like.shape, generator=generator, dtype=like.dtype)
        return torch.full_like(like, garbage)

    here = present[:, None]
    pooled = feature.pooled
    if fill.rows:
        pooled = torch.where(here, pooled, junk(pooled))
    if feature.tokens is None or feature.mask is None:
        if not fill.rows:
            return feature
        # Nobody has the key: tokens may as well come along, all junk, with any mask.
        tokens = junk(feature.pooled[:, None, :].expand(-1, 3, -1))
        mask = torch.rand(tokens.shape[:2], generator=generator) < 0.5
        return EncoderOutput(pooled, tokens, mask & ~here)
    tokens, mask = feature.tokens, feature.mask
    if fill.padding:
        tokens = torch.where((mask | ~here)[..., None], tokens, junk(tokens))
    if fill.rows:
        tokens = torch.where(here[..., None], tokens, junk(tokens))
        mask = torch.where(here, mask, torch.rand(mask.shape, generator=generator) < 0.5)
    return EncoderOutput(pooled, tokens, mask)


def check_fusion_all_absent_finite(case: Case) -> None:
    """Rows with nothing present get one finite output (the same for every such row), in a
    mixed batch and in a batch where nothing is present at all (no tokens); train mode too."""
    fusion, dims = fusion_for(case, 2)
    nothing = {key: torch.zeros(3, dtype=torch.bool) for key in dims}
    empty = fake_features(dims, nothing, seed=4, tokens=takes_tokens(fusion))
    present = {key: torch.tensor([False, True, False]) for key in dims}
    mixed = fake_features(dims, present, seed=5, tokens=takes_tokens(fusion))
    for what, features, rows in (("nothing present", empty, nothing), ("a mixed", mixed, present)):
        out = fuse_eval(case, fusion, features, rows)[~_anything(rows)]
        finite(case, f"the output for all-absent rows of a batch with {what}", out)
        close(case, f"all-absent rows of a batch with {what} differ", out[-1], out[0])
    fusion.train()
    finite(case, "the train-mode output for all-absent rows", fuse(case, fusion, empty, nothing))


def check_fusion_gradients(case: Case) -> None:
    """With mixed presence (so parameters used only for absent modalities take part too),
    every trainable parameter gets a finite, non-zero gradient; parameters are randomized
    first, since zero-initialized layers (FiLM's) would block it."""
    fusion, dims = fusion_for(case, 3)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(6)
        for parameter in fusion.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    fusion.train()
    present = mixed_rows(dims)
    out = fuse(
        case, fusion, fake_features(dims, present, seed=7, tokens=takes_tokens(fusion)), present
    )
    weights = torch.randn(out.shape, generator=generator)
    backward(case, fusion, (out * weights).sum(), "its output")
    zero = [n for n, p in fusion.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not zero, f"{case.who()}: the gradient of {', '.join(zero[:8])} is all zeros"


def check_fusion_float64(case: Case) -> None:
    """After ``.to(torch.float64)`` the fusion takes and returns float64, and agrees with its
    float32 self."""
    fusion, dims = fusion_for(case, 2)
    present = mixed_rows(dims)
    single = fuse_eval(
        case, fusion, fake_features(dims, present, seed=8, tokens=takes_tokens(fusion)), present
    )
    fusion = fusion.to(torch.float64)
    double_in = fake_features(
        dims, present, seed=8, tokens=takes_tokens(fusion), dtype=torch.float64
    )
    double = fuse_eval(case, fusion, double_in, present)
    assert double.dtype == torch.float64, (
        f"{case.who()}: float64 inputs gave a {double.dtype} output"
    )
    close(case, "float64 and float32 outputs differ", double.float(), single, atol=1e-4)
