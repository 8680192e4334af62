"""Conformance checks every fusion this plugin registers must pass, driven by the registry.

Each registered fusion is built through its registered factory, with its params model's
defaults (sizes shrunk to keep the tests fast; one test keeps the defaults as they are), plus
a few variants of the params that change the code path. Modality counts 1, 2 and 3.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from mmplug import EncoderOutput, Fusion
from mmplug.plugins.host import PluginHost
from mmplug.plugins.registry import ComponentSpec

DIMS: dict[int, dict[str, int]] = {
    1: {"text": 5},
    2: {"text": 5, "image": 3},
    3: {"text": 5, "image": 3, "audio": 2},
}

# Parameters with a (non-null) default shrunk to these values wherever a params model has them.
SMALL = {"dim": 8, "hidden_dim": 8, "project_dim": 3, "rank": 2, "heads": 2, "layers": 1}

# Params that take another code path; applied on top of the shrunk defaults.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "concat": [{"dim": None, "hidden_dims": [6], "layer_norm": True}, {"dim": None}],
    "film": [{"dim": 4, "target": "text"}],
    "tensor": [{"project_dim": None}],
    "transformer": [{"use_tokens": True}],
}

# Parameters that only ever act when something is absent.
ABSENCE_ONLY = {"empty", "placeholders"}


def _registered() -> dict[str, ComponentSpec]:
    host = PluginHost(strict=True)
    host.add_module("mmplug_fusion", name="fusion", distribution="mmplug-fusion", version="test")
    return {
        spec.name: spec
        for spec in host.registry.components("fusion")
        if spec.distribution == "mmplug-fusion"
    }


SPECS = _registered()


def _small(spec: ComponentSpec) -> dict[str, Any]:
    fields = spec.params.model_fields
    return {k: v for k, v in SMALL.items() if k in fields and fields[k].default is not None}


CONFIGS = [
    pytest.param(
        name,
        {**_small(spec), **variant},
        id=name + "".join(f"-{k}={v}" for k, v in variant.items()),
    )
    for name, spec in SPECS.items()
    for variant in [{}, *VARIANTS.get(name, [])]
]
MODALITIES = pytest.mark.parametrize("m", [1, 2, 3], ids=lambda m: f"{m}mod")


def _build(name: str, params: dict[str, Any], m: int) -> Fusion:
    spec = SPECS[name]
    fusion = spec.load_factory()(input_dims=DIMS[m], **dict(spec.params(**params)))
    assert isinstance(fusion, Fusion)
    return fusion.eval()


def _rows(keys: list[str]) -> list[str]:
    """Every key present; each key absent alone; none present."""
    letters = "".join(k[0] for k in keys)
    return [letters, *(letters.replace(k[0], "") for k in keys if len(keys) > 1), ""]


def _fuse(fusion: Fusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        out: Tensor = fusion(features, present)
    return out


def test_the_issue_strategies_are_registered() -> None:
    assert set(SPECS) == {
        "concat",
        "sum",
        "attention",
        "gated",
        "lmf",
        "tensor",
        "film",
        "transformer",
        "cross-attention",
    }
    for spec in SPECS.values():
        assert spec.summary
        assert isinstance(spec.factory, str)  # lazy: listing never imports torch
        for field, info in spec.params.model_fields.items():
            assert info.description, f"{spec.name}.{field} has no description"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_constructor_defaults_match_params_model(name: str) -> None:
    spec = SPECS[name]
    signature = inspect.signature(spec.load_factory())
    for field, info in spec.params.model_fields.items():
        default = signature.parameters[field].default
        expected = info.get_default(call_default_factory=True)
        assert default == expected or (default is None and expected == []), (name, field)


@pytest.mark.parametrize("name", sorted(SPECS))
@MODALITIES
def test_default_params_give_batch_by_output_dim(
    name: str, m: int, make_features: Callable[..., Any], presence: Callable[..., Any]
) -> None:
    fusion = _build(name, {}, m)
    keys = sorted(DIMS[m])
    present = presence(_rows(keys), keys)
    out = _fuse(fusion, make_features(DIMS[m], present), present)
    assert out.shape == (len(_rows(keys)), fusion.output_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "params"), CONFIGS)
@MODALITIES
def test_dict_order_and_batch_rows_do_not_matter(
    name: str,
    params: dict[str, Any],
    m: int,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    fusion = _build(name, params, m)
    keys = sorted(DIMS[m])
    rows = _rows(keys)
    present = presence(rows, keys)
    features = make_features(DIMS[m], present)
    out = _fuse(fusion, features, present)
    assert out.shape == (len(rows), fusion.output_dim)

    backwards = {k: features[k] for k in reversed(keys)}
    torch.testing.assert_close(_fuse(fusion, backwards, dict(reversed(present.items()))), out)

    for row in range(len(rows)):  # each row alone gives the same output as in the batch
        one = {k: _row(f, row) for k, f in features.items()}
        alone = _fuse(fusion, one, {k: p[row : row + 1] for k, p in present.items()})
        torch.testing.assert_close(alone, out[row : row + 1], atol=1e-5, rtol=1e-4)


def _row(feature: EncoderOutput, row: int) -> EncoderOutput:
    pick = slice(row, row + 1)
    if feature.tokens is None or feature.mask is None:
        return EncoderOutput(feature.pooled[pick])
    return EncoderOutput(feature.pooled[pick], feature.tokens[pick], feature.mask[pick])


GARBAGE = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e6, None])


@pytest.mark.parametrize(("name", "params"), CONFIGS)
@MODALITIES
def test_absent_modality_and_padding_have_no_influence(
    name: str,
    params: dict[str, Any],
    m: int,
    make_features: Callable[..., Any],
) -> None:
    fusion = _build(name, params, m)
    dims = DIMS[m]
    keys = sorted(dims)

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(
        has=st.lists(st.lists(st.booleans(), min_size=m, max_size=m), min_size=1, max_size=4),
        garbage=GARBAGE,
        seed=st.integers(0, 2**16),
    )
    def check(has: list[list[bool]], garbage: float | None, seed: int) -> None:
        present = {k: torch.tensor([row[i] for row in has]) for i, k in enumerate(keys)}
        features = make_features(dims, present, seed=seed)
        changed = {k: _corrupt(features[k], present[k], garbage, seed) for k in keys}
        out = _fuse(fusion, features, present)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(_fuse(fusion, changed, present), out)

    check()


def _corrupt(
    feature: EncoderOutput, present: Tensor, garbage: float | None, seed: int
) -> EncoderOutput:
    """Overwrite what must not matter: absent rows (values and mask) and padded tokens."""
    generator = torch.Generator().manual_seed(seed + 1)

    def junk(like: Tensor) -> Tensor:
        if garbage is None:
            return 100 * torch.randn(like.shape, generator=generator, dtype=like.dtype)
        return torch.full_like(like, garbage)

    here = present.unsqueeze(-1)
    pooled = torch.where(here, feature.pooled, junk(feature.pooled))
    if feature.tokens is None or feature.mask is None:
        # No sample had the key: tokens may as well come with it, all junk.
        tokens = junk(feature.pooled.unsqueeze(1).expand(-1, 3, -1))
        mask = torch.rand(tokens.shape[:2], generator=generator) < 0.5
        return EncoderOutput(pooled, tokens, mask & ~here)
    tokens = torch.where(feature.mask.unsqueeze(-1), feature.tokens, junk(feature.tokens))
    random_mask = torch.rand(feature.mask.shape, generator=generator) < 0.5
    mask = torch.where(here, feature.mask, random_mask)  # absent rows' mask says anything
    return EncoderOutput(pooled, tokens, mask)


@pytest.mark.parametrize(("name", "params"), CONFIGS)
@MODALITIES
def test_rows_with_nothing_present_get_one_finite_learned_output(
    name: str,
    params: dict[str, Any],
    m: int,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    fusion = _build(name, params, m)
    keys = sorted(DIMS[m])
    # Some rows empty among others, then a whole batch with nothing (tokens are None then).
    for rows in (["", _rows(keys)[0], ""], ["", ""]):
        present = presence(rows, keys)
        out = _fuse(fusion, make_features(DIMS[m], present), present)
        assert torch.isfinite(out).all()
        empty = [i for i, row in enumerate(rows) if not row]
        for i in empty[1:]:
            torch.testing.assert_close(out[i], out[empty[0]])


def _randomize(fusion: Fusion) -> None:
    """Random parameters: zero-initialized layers (FiLM) would otherwise block gradients."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))


def _grads(
    fusion: Fusion, features: dict[str, EncoderOutput], present: dict[str, Tensor]
) -> dict[str, Tensor | None]:
    fusion.zero_grad(set_to_none=True)
    out = fusion(features, present)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return {name: p.grad for name, p in fusion.named_parameters()}


@pytest.mark.parametrize(("name", "params"), CONFIGS)
@MODALITIES
def test_gradients_reach_every_parameter(
    name: str,
    params: dict[str, Any],
    m: int,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    fusion = _build(name, params, m)
    _randomize(fusion)
    keys = sorted(DIMS[m])

    present = presence([_rows(keys)[0]] * 3, keys)
    for param, grad in _grads(fusion, make_features(DIMS[m], present), present).items():
        if param.split(".")[0] in ABSENCE_ONLY:
            # Only absent modalities use these; with all present they must get nothing.
            assert grad is None or not grad.any(), param
        else:
            assert grad is not None and grad.any() and grad.isfinite().all(), param

    present = presence(_rows(keys), keys)  # mixed: now every parameter takes part
    for param, grad in _grads(fusion, make_features(DIMS[m], present), present).items():
        assert grad is not None and grad.any() and grad.isfinite().all(), param


@pytest.mark.parametrize(("name", "params"), CONFIGS)
@MODALITIES
def test_works_in_float64(
    name: str,
    params: dict[str, Any],
    m: int,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    fusion = _build(name, params, m)
    keys = sorted(DIMS[m])
    present = presence(_rows(keys), keys)
    features = make_features(DIMS[m], present)
    single = _fuse(fusion, features, present)
    fusion.to(torch.float64)
    double = _fuse(fusion, {k: _to_double(f) for k, f in features.items()}, present)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, atol=1e-4, rtol=1e-4)


def _to_double(feature: EncoderOutput) -> EncoderOutput:
    tokens = None if feature.tokens is None else feature.tokens.double()
    return EncoderOutput(feature.pooled.double(), tokens, feature.mask)
