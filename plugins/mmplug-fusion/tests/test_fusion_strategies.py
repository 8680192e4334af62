"""What mmplug-fusion registers; the behaviour every fusion must have is checked by mmplug's
conformance kit (test_conformance.py), and what is particular to each in
test_fusion_specifics.py. Here: every strategy the plugin promises is registered, lazily,
with described params, and each builds with its params' defaults as they are."""

from __future__ import annotations

import pytest
import torch

from mmplug import EncoderOutput, Fusion
from mmplug.plugins.host import PluginHost
from mmplug.plugins.registry import ComponentSpec

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
def test_default_params_build_and_fuse_three_modalities(name: str) -> None:
    """The defaults as registered (the kit shrinks sizes): a [B, output_dim] finite output."""
    spec = SPECS[name]
    dims = {"text": 5, "image": 3, "audio": 2}
    fusion = spec.load_factory()(input_dims=dims, **dict(spec.params()))
    assert isinstance(fusion, Fusion)
    present = {key: torch.tensor([True, key != "image", False]) for key in dims}
    features = {key: EncoderOutput(torch.randn(3, dim)) for key, dim in dims.items()}
    with torch.no_grad():
        out = fusion.eval()(features, present)
    assert out.shape == (3, fusion.output_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_parameters_for_absence_learn_nothing_when_everything_is_present(name: str) -> None:
    """The learned stand-ins for absent modalities (``empty``, ``placeholders``) get no
    gradient from a batch where every modality is present (the kit checks they get one from
    a mixed batch)."""
    spec = SPECS[name]
    dims = {"text": 5, "image": 3}
    fusion = spec.load_factory()(input_dims=dims, **dict(spec.params(dim=8)))
    present = {key: torch.ones(4, dtype=torch.bool) for key in dims}
    features = {key: EncoderOutput(torch.randn(4, dim)) for key, dim in dims.items()}
    fusion.train()(features, present).square().sum().backward()
    absence_only = [(n, p) for n, p in fusion.named_parameters() if n.split(".")[0] in ABSENCE_ONLY]
    for param_name, param in absence_only:
        assert param.grad is None or not param.grad.any(), param_name
    others = [p for n, p in fusion.named_parameters() if n.split(".")[0] not in ABSENCE_ONLY]
    assert any(p.grad is not None and p.grad.any() for p in others)
