"""What each strategy promises on its own: formulas, refusals, identity at init, parameter
costs (as the README states them), discovery and a whole model built from a config."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
from torch import Tensor, nn

import mmplug
import mmplug_fusion
from mmplug import ComponentError, Encoder, EncoderOutput, Head, Modality, build_model
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import discover, load_plugins
from mmplug.plugins.registry import ComponentSpec, normalize_distribution

Build = Callable[..., Any]
DIMS3 = {"text": 5, "image": 3, "audio": 2}


def _fuse(fusion: Any, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        out: Tensor = fusion.eval()(features, present)
    return out


# -- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sum", "transformer"])
def test_inputs_that_do_not_match_the_keys_are_clear_errors(
    name: str, specs: dict[str, ComponentSpec], build: Build
) -> None:
    with pytest.raises(ComponentError, match="at least one modality"):
        build(specs[name], {})
    fusion = build(specs[name], {"text": 4, "image": 3}, dim=8)
    features = {"text": EncoderOutput(torch.zeros(2, 4))}
    with pytest.raises(ComponentError, match=r"keys image, text .* for image"):
        fusion(features, {"text": torch.ones(2, dtype=torch.bool)})


# -- sum ------------------------------------------------------------------------------------


def test_sum_of_two_modalities_is_relu_of_wt_t_plus_wi_i_plus_b(
    specs: dict[str, ComponentSpec], build: Build
) -> None:
    fusion = build(specs["sum"], {"text": 4, "image": 3}, dim=5, activation="relu")
    with torch.no_grad():
        fusion.bias.copy_(torch.randn(5))  # a zero bias would make the check weaker
    t, i = torch.randn(6, 4), torch.randn(6, 3)
    w_t, w_i, b = fusion.project["text"].weight, fusion.project["image"].weight, fusion.bias
    expected = torch.relu(t @ w_t.T + i @ w_i.T + b)

    present = {"text": torch.ones(6, dtype=torch.bool), "image": torch.ones(6, dtype=torch.bool)}
    features = {"text": EncoderOutput(t), "image": EncoderOutput(i)}
    torch.testing.assert_close(_fuse(fusion, features, present), expected)

    # Image absent in rows 1 and 4: those rows are relu(W_t t + b), whatever the image rows hold.
    present["image"] = torch.tensor([True, False, True, True, False, True])
    out = _fuse(fusion, features, present)
    without_image = torch.relu(t @ w_t.T + b)
    torch.testing.assert_close(out[present["image"]], expected[present["image"]])
    torch.testing.assert_close(out[~present["image"]], without_image[~present["image"]])


# -- film -----------------------------------------------------------------------------------


def test_film_is_the_identity_on_its_target_at_init(
    specs: dict[str, ComponentSpec],
    build: Build,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    present = presence(["tia", "ti", "ia", "i", "ta", ""], sorted(DIMS3))
    features = make_features(DIMS3, present)
    has = present["image"]
    image = features["image"].pooled

    fusion = build(specs["film"], DIMS3, target="image")
    out = _fuse(fusion, features, present)
    assert fusion.output_dim == 3
    assert torch.equal(out[has], image[has])  # gamma = 1, beta = 0 exactly
    # No image: the learned "no target" vector, not modulated yet either.
    assert torch.equal(out[~has], fusion.empty.detach().expand(int((~has).sum()), -1))

    projected = build(specs["film"], DIMS3, target="image", dim=4)
    out = _fuse(projected, features, present)
    assert projected.output_dim == 4
    torch.testing.assert_close(out[has], projected.project(image)[has])


def test_film_target_defaults_to_the_first_sorted_key(
    specs: dict[str, ComponentSpec], build: Build
) -> None:
    fusion = build(specs["film"], DIMS3)
    assert fusion.target == "audio"
    assert fusion.output_dim == DIMS3["audio"]


def test_film_rejects_an_unknown_target_naming_it_and_the_keys(
    specs: dict[str, ComponentSpec], build: Build
) -> None:
    with pytest.raises(ComponentError, match=r"'video' .*: audio, image, text"):
        build(specs["film"], DIMS3, target="video")


# -- tensor ---------------------------------------------------------------------------------


def test_tensor_refuses_a_product_above_max_features(
    specs: dict[str, ComponentSpec], build: Build
) -> None:
    with pytest.raises(ComponentError) as info:
        build(specs["tensor"], {"text": 768, "image": 512}, project_dim=None)
    message = str(info.value)
    assert "394,497 features" in message  # 769 x 513
    assert "513 (image) x 769 (text)" in message
    assert "max_features=65,536" in message and "set project_dim" in message

    four = {"text": 5, "image": 3, "audio": 2, "depth": 4}  # 33^4 with the default 32
    with pytest.raises(ComponentError, match=r"1,185,921 features.*lower project_dim"):
        build(specs["tensor"], four)
    assert build(specs["tensor"], four, project_dim=2).product_features == 3**4


# -- attention over tokens ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [("transformer", {"use_tokens": True}), ("cross-attention", {})],
)
def test_token_fusions_read_real_tokens_only(
    name: str,
    params: dict[str, Any],
    specs: dict[str, ComponentSpec],
    build: Build,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    dims = {"text": 5, "image": 3}
    fusion = build(specs[name], dims, dim=8, heads=2, layers=2, **params)
    present = presence(["ti", "ti", "t", "i"], sorted(dims))
    features = make_features(dims, present, seed=3)
    out = _fuse(fusion, features, present)
    text = features["text"]
    assert text.tokens is not None and text.mask is not None

    # Padding (masked tokens) holds anything: no effect.
    junk = torch.where(text.mask.unsqueeze(-1), text.tokens, 1e3 * torch.randn_like(text.tokens))
    padded = {**features, "text": EncoderOutput(text.pooled, junk, text.mask)}
    torch.testing.assert_close(_fuse(fusion, padded, present), out)

    # A real token of row 0 matters, to row 0 only.
    tokens = text.tokens.clone()
    tokens[0, 0] += 1.0
    moved = EncoderOutput(text.pooled, tokens, text.mask)
    changed = _fuse(fusion, {**features, "text": moved}, present)
    assert not torch.allclose(changed[0], out[0])
    torch.testing.assert_close(changed[1:], out[1:])

    # A present sample whose tokens are all masked counts as not having the modality.
    mask = text.mask.clone()
    mask[1] = False
    no_tokens = {**features, "text": EncoderOutput(text.pooled, text.tokens, mask)}
    absent = {**present, "text": present["text"].clone()}
    absent["text"][1] = False
    torch.testing.assert_close(_fuse(fusion, no_tokens, present), _fuse(fusion, features, absent))


def test_transformer_without_use_tokens_reads_pooled_only(
    specs: dict[str, ComponentSpec],
    build: Build,
    make_features: Callable[..., Any],
    presence: Callable[..., Any],
) -> None:
    dims = {"text": 5, "image": 3}
    fusion = build(specs["transformer"], dims, dim=8, heads=2)
    present = presence(["ti", "t"], sorted(dims))
    features = make_features(dims, present)
    text = features["text"]
    assert text.tokens is not None
    other_tokens = EncoderOutput(text.pooled, torch.randn_like(text.tokens), text.mask)
    out = _fuse(fusion, features, present)
    torch.testing.assert_close(_fuse(fusion, {**features, "text": other_tokens}, present), out)


# -- parameter costs, as README.md states them ------------------------------------------------


def expected_parameters(name: str, dims: dict[str, int], p: dict[str, Any]) -> int:
    """The README's cost formulas. ``S = sum(D_m)``, ``M`` modalities, ``d = dim``."""
    s, m, d = sum(dims.values()), len(dims), p.get("dim")
    if name == "concat":
        width, total = s + m, s
        for h in p["hidden_dims"]:
            total += width * h + h + (2 * h if p["layer_norm"] else 0)
            width = h
        return total + (width * d + d if d else 0)
    if name == "sum":
        return s * d + d
    if name == "attention":
        return s * d + m * d + d + (d * d + 2 * d if m > 1 else 0)
    if name == "gated":
        return s * d + d + (s * m * d + m * d if m > 1 else 0)
    if name == "lmf":
        return p["rank"] * d * (s + m) + p["rank"] + d
    if name == "tensor":
        q = p["project_dim"]
        product = math.prod((q or dim) + 1 for dim in dims.values())
        return ((s + m) * q if q else 0) + product * d + d
    if name == "film":
        d_t = dims[p["target"] or min(dims)]
        o, h = d or d_t, p["hidden_dim"]
        return (d_t * o + o if d else 0) + (s - d_t) * h + h + 2 * h * o + 2 * o + o
    if name == "transformer":
        return s * d + 2 * m * d + d + p["layers"] * (12 * d * d + 13 * d) + 2 * d
    if name == "cross-attention":
        per_layer = m * (m - 1) * (4 * d * d + 8 * d) + m * (8 * d * d + 7 * d)
        return s * d + m * d + p["layers"] * per_layer + 2 * m * d + m * d + m * d * d + d
    raise AssertionError(f"no cost formula for {name!r}: add it here and to README.md")


COST_PARAMS: dict[str, list[dict[str, Any]]] = {
    "concat": [{}, {"dim": None}, {"hidden_dims": [6, 4], "layer_norm": True, "dim": 3}],
    "sum": [{"dim": 8}],
    "attention": [{"dim": 8}],
    "gated": [{"dim": 8}],
    "lmf": [{"dim": 8, "rank": 3}],
    "tensor": [{"project_dim": 3, "dim": 8}, {"project_dim": None, "dim": 8}],
    "film": [{"hidden_dim": 8}, {"dim": 4, "hidden_dim": 8, "target": "text"}],
    "transformer": [{"dim": 8, "heads": 2, "layers": 3}],
    "cross-attention": [{"dim": 8, "heads": 2, "layers": 2}],
}


def test_every_fusion_has_a_cost_formula(specs: dict[str, ComponentSpec]) -> None:
    assert set(COST_PARAMS) == set(specs)


@pytest.mark.parametrize("name", sorted(COST_PARAMS))
@pytest.mark.parametrize(
    "dims", [{"text": 5}, {"text": 5, "image": 3}, DIMS3], ids=["1mod", "2mod", "3mod"]
)
def test_parameter_count_matches_the_readme_formula(
    name: str, dims: dict[str, int], specs: dict[str, ComponentSpec], build: Build
) -> None:
    for overrides in COST_PARAMS[name]:
        fusion = build(specs[name], dims, **overrides)
        params = dict(specs[name].params(**overrides))
        actual = sum(p.numel() for p in fusion.parameters())
        assert actual == expected_parameters(name, dims, params), overrides


# -- packaging and discovery ----------------------------------------------------------------


def test_installed_entry_point_is_discovered(specs: dict[str, ComponentSpec]) -> None:
    ours = [p for p in discover() if normalize_distribution(p.distribution) == "mmplug-fusion"]
    assert [(p.name, p.module, p.version) for p in ours] == [
        ("fusion", "mmplug_fusion", mmplug_fusion.__version__)
    ]
    host = load_plugins(environ={"MMPLUG_LOAD_PLUGINS": "mmplug-fusion"})
    (record,) = [r for r in host.records if r.distribution == "mmplug-fusion"]
    assert (record.name, record.status, record.version) == (
        "fusion",
        "loaded",
        mmplug_fusion.__version__,
    )
    assert sorted(record.components) == sorted(f"fusion:{name}" for name in specs)


# -- a whole model ----------------------------------------------------------------------------


class _VecModality(Modality):
    name = "vec"

    def load(self, value: Any, *, root: str | Path | None = None) -> Tensor:
        return torch.tensor(value, dtype=torch.float32)


class _VecParams(BaseModel):
    size: int
    dim: int


class _VecEncoder(Encoder):
    """One token per number (its embedding), pooled by their mean."""

    modality = "vec"

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.output_dim = dim
        self.embed = nn.Linear(1, dim)

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return {"values": torch.stack(raws)}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values = inputs["values"].to(self.embed.weight.dtype)
        tokens = self.embed(values.unsqueeze(-1))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens.mean(dim=1), tokens, mask)


class _ScoreHead(Head):
    """A linear layer and a squared error: core's heads would import torchmetrics (seconds)."""

    task = "regression"
    output_dim = 1

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, 1)

    def forward(self, fused: Tensor) -> Tensor:
        out: Tensor = self.linear(fused)
        return out

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs.squeeze(-1) - targets) ** 2).mean()

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs

    def metrics(self) -> dict[str, Any]:
        return {}


class _VecPlugin:
    @mmplug.hookimpl
    def register_modalities(self, register: Any) -> None:
        register("vec", _VecModality)

    @mmplug.hookimpl
    def register_encoders(self, register: Any) -> None:
        register("vec", _VecEncoder, params=_VecParams, modality="vec")

    @mmplug.hookimpl
    def register_heads(self, register: Any) -> None:
        register("score", _ScoreHead)


def _config(fusion: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "encoders": {
                "text": {"name": "vec", "size": 3, "dim": 4},
                "image": {"name": "vec", "size": 2, "dim": 6},
            },
            "fusion": fusion,
            "head": {"name": "score"},
        }
    }


@pytest.fixture(scope="module")
def registry() -> Any:
    host = PluginHost(strict=True)
    host.add_module("mmplug_fusion", name="fusion", distribution="mmplug-fusion", version="0.1.0")
    host.add(_VecPlugin(), name="vec", distribution="vec-test", version="1")
    assert not host.failures
    return host.registry


@pytest.mark.parametrize("name", sorted(COST_PARAMS))
def test_builds_into_a_model_and_trains_with_absent_modalities(name: str, registry: Any) -> None:
    fusion = {"name": name, **COST_PARAMS[name][-1]}
    model = build_model(_config(fusion), registry=registry)
    rows = [{"text": [1, 2, 3], "image": [4, 5]}, {"text": [0, 1, 0]}, {"image": [1, 1]}, {}]
    pipeline = mmplug.Pipeline.from_model(model)
    batch = pipeline.collate([pipeline.load(row) for row in rows])
    out = model(batch)
    assert out.fused.shape == (4, model.fusion.output_dim)
    loss = model.head.loss(out.logits, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    loss.backward()
    assert torch.isfinite(loss)


def test_a_refused_tensor_fusion_names_the_config_path(registry: Any) -> None:
    fusion = {"name": "tensor", "project_dim": None, "max_features": 10}
    with pytest.raises(ComponentError, match=r"model\.fusion: .*35 features.*max_features=10"):
        build_model(_config(fusion), registry=registry)
