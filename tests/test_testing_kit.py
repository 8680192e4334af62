"""The conformance kit (mmplug.testing): good components pass, broken ones fail by name."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mmplug
from mmplug import Encoder, EncoderOutput, Fusion, Modality
from mmplug.testing import Check, Conformance

from .conftest import Plugin, make_toy_host

TOY_SAMPLES: dict[str, Any] = {
    "numbers": ["0.5,1.0,-2.0", [3.0, 0.0, 1.5], "1,1,1"],
    "word": ["cat", "hippopotamus", ""],
}
CORE_PARAMS = {
    "mlp": {"input_size": 3},
    "classification": {"num_classes": 3, "hidden_dims": [4]},
    "multilabel": {"num_labels": 4},
    "regression": {"num_targets": 2},
}


def _toy_kit(toy_plugin: ModuleType, **kwargs: Any) -> Conformance:
    return Conformance(
        registry=make_toy_host(toy_plugin).registry,
        samples=TOY_SAMPLES,
        params=CORE_PARAMS,
        **kwargs,
    )


def test_core_heads_and_the_toy_plugin_pass_every_check(toy_plugin: ModuleType) -> None:
    checks = _toy_kit(toy_plugin).checks()
    ids = {check.id for check in checks}
    assert {"encoder:mlp:batch_independent", "fusion:mean:absent_has_no_influence"} <= ids
    assert {"head:classification:loss", "modality:word:rejects_bad_values"} <= ids
    for check in checks:
        if check.id == "encoder:mlp:freeze" or check.id.startswith("encoder:char-bag:freeze"):
            continue  # the toy encoders offer no freeze param: that check skips
        check()


def test_parametrize_gives_one_test_id_per_check(toy_plugin: ModuleType) -> None:
    mark = _toy_kit(toy_plugin).parametrize()
    argname, params = mark.args
    assert argname == "check"
    ids = [param.id for param in params]
    assert len(ids) == len(set(ids)) and "encoder:char-bag:gradients" in ids


def test_distribution_selects_its_components(toy_plugin: ModuleType) -> None:
    kit = _toy_kit(toy_plugin, distribution="toy-plugin")
    assert {spec.name for spec in kit.components()} == {
        "numbers",
        "word",
        "mlp",
        "char-bag",
        "mean",
    }
    with pytest.raises(LookupError, match="no component is registered by distribution 'nobody'"):
        _toy_kit(toy_plugin, distribution="nobody").checks()


# -- broken components fail with a message naming them ---------------------------------------


class BatchNormalised(Encoder):
    """Subtracts the batch mean: a sample's output depends on its neighbours."""

    modality = "numbers"
    output_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.unused = nn.Linear(3, 3)

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return {"values": torch.stack(raws)}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values = inputs["values"] * self.scale
        return EncoderOutput(values - values.mean(0, keepdim=True))


class LeakyFusion(Fusion):
    """Sums every modality's projection, present or not."""

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__()
        self.output_dim = 2
        self.project = nn.ModuleDict({k: nn.Linear(d, 2) for k, d in input_dims.items()})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        return sum(self.project[k](features[k].pooled) for k in features)  # type: ignore[return-value]


class LaxModality(Modality):
    name = "lax"

    def load(self, value: Any, *, root: Any = None) -> Any:
        return float(value)  # TypeError for object(), ValueError for "abc": not a DataError


def _broken_kit(toy_plugin: ModuleType) -> Conformance:
    host = make_toy_host(toy_plugin)
    host.add(
        Plugin(
            register_modalities=[(("lax", LaxModality), {})],
            register_encoders=[(("batch-norm", BatchNormalised), {"modality": "numbers"})],
            register_fusions=[(("leaky", LeakyFusion), {})],
        ),
        name="broken",
        distribution="acme-broken",
        version="0.1",
    )
    return Conformance(
        "acme-broken",
        registry=host.registry,
        samples={**TOY_SAMPLES, "lax": ["1.5", 2]},
        bad_values={"lax": ["abc"]},
    )


def _run(kit: Conformance, check_id: str) -> str:
    [check] = [c for c in kit.checks() if c.id == check_id]
    with pytest.raises(AssertionError) as info:
        check()
    return str(info.value)


@pytest.mark.parametrize(
    ("check_id", "expected"),
    [
        (
            "encoder:batch-norm:batch_independent",
            "encoder 'batch-norm' (acme-broken 0.1): sample 0 alone differs from it in a batch",
        ),
        ("encoder:batch-norm:gradients", "no gradient reached 2 trainable parameter(s): unused."),
        ("fusion:leaky:absent_has_no_influence", "changing an absent modality's features"),
        ("fusion:leaky:all_absent_finite", None),
        ("modality:lax:rejects_bad_values", "raised TypeError"),
    ],
)
def test_broken_components_fail_naming_the_component(
    toy_plugin: ModuleType, check_id: str, expected: str | None
) -> None:
    kit = _broken_kit(toy_plugin)
    if expected is None:  # a sum of zero rows through biases is finite: this check passes
        [check] = [c for c in kit.checks() if c.id == check_id]
        check()
        return
    message = _run(kit, check_id)
    assert expected in message
    assert "acme-broken 0.1" in message


def test_missing_samples_and_required_params_are_explained(toy_plugin: ModuleType) -> None:
    kit = Conformance(registry=make_toy_host(toy_plugin).registry)
    [samples] = [c for c in kit.checks() if c.id == "encoder:char-bag:output_shapes"]
    with pytest.raises(AssertionError, match=r"no samples for modality 'word': give Conformance"):
        samples()
    [params] = [c for c in kit.checks() if c.id == "encoder:mlp:output_shapes"]
    with pytest.raises(AssertionError, match=r"give the required ones with Conformance\(params="):
        params()


def test_skip_is_passed_to_pytest(toy_plugin: ModuleType) -> None:
    mark = _toy_kit(toy_plugin, skip={"mlp": "too slow here"}).parametrize()
    skipped = [p for p in mark.args[1] if p.marks]
    assert skipped and all(p.id.startswith("encoder:mlp:") for p in skipped)
    assert isinstance(skipped[0].values[0], Check)


# -- the pytest plugin -----------------------------------------------------------------------


def test_pytest_plugin_header_and_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fresh_host(mmplug_host):
            assert mmplug_host.records[0].distribution == "mmplug"
            assert mmplug_host.registry.get("head", "classification")
        """
    )
    result = pytester.runpytest_subprocess("-p", "mmplug", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"mmplug {mmplug.__version__} (plugin API 1), plugins: *"])


def test_a_plugin_test_file_is_a_few_lines(
    pytester: pytest.Pytester, toy_plugin: ModuleType
) -> None:
    pytester.makepyfile(
        f"""
        import importlib.util
        from mmplug.testing import Conformance

        spec = importlib.util.spec_from_file_location("toy", {str(toy_plugin.__file__)!r})
        toy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(toy)

        conformance = Conformance(
            "toy",
            plugins=[toy],
            samples={{"numbers": [[1.0, 2.0], [3.0, 4.0]], "word": ["a", "bcd"]}},
            params={{"mlp": {{"input_size": 2}}}},
        )

        @conformance.parametrize()
        def test_conformance(check):
            check()
        """
    )
    result = pytester.runpytest_subprocess("-q", "-k", "not freeze")
    # 2 modalities x 3 checks + 2 encoders x 6 + 1 fusion x 7; the toy encoders have no freeze
    result.assert_outcomes(passed=25, deselected=2)


# -- a component that breaks the interface fails by name, not with a stray exception ----------


class Detached(BatchNormalised):
    """Its output is cut from the graph: no gradient can reach its parameter."""

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        return EncoderOutput((inputs["values"] * self.scale).detach())


class TupleOut(BatchNormalised):
    def forward(self, inputs: dict[str, Tensor]) -> Any:  # type: ignore[override]
        return (inputs["values"],)


class BadTokens(BatchNormalised):
    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values = inputs["values"] * self.scale
        return EncoderOutput(values, values[:, None, :2], torch.ones(len(values), 1).bool())


class ParameterFree(Fusion):
    """Concatenation with absent rows zeroed: nothing to train, and that is fine."""

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__()
        self.output_dim = sum(input_dims.values())

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        return torch.cat(
            [torch.where(present[k][:, None], features[k].pooled, 0.0) for k in sorted(features)],
            dim=-1,
        )


@pytest.mark.parametrize(
    ("check_id", "expected"),
    [
        ("encoder:detached:gradients", "its output is not differentiable"),
        ("encoder:tuple-out:output_shapes", "forward returned tuple, expected an EncoderOutput"),
        ("encoder:tuple-out:finite", "forward returned tuple, expected an EncoderOutput"),
        ("encoder:bad-tokens:output_shapes", "tokens must be [B=3, T, D=3], got shape (3, 1, 2)"),
        ("fusion:free:gradients", None),
    ],
)
def test_interface_breaks_are_named(toy_plugin: ModuleType, check_id: str, expected: str) -> None:
    host = make_toy_host(toy_plugin)
    host.add(
        Plugin(
            register_encoders=[
                ((name, cls), {"modality": "numbers"})
                for name, cls in [
                    ("detached", Detached),
                    ("tuple-out", TupleOut),
                    ("bad-tokens", BadTokens),
                ]
            ],
            register_fusions=[(("free", ParameterFree), {})],
        ),
        name="broken",
        distribution="acme-broken",
        version="0.1",
    )
    kit = Conformance("acme-broken", registry=host.registry, samples=TOY_SAMPLES)
    if expected is None:  # a correct component without parameters passes
        [check] = [c for c in kit.checks() if c.id == check_id]
        check()
        return
    message = _run(kit, check_id)
    assert expected in message
    assert message.startswith(
        f"{check_id.split(':')[0]} {check_id.split(':')[1]!r} (acme-broken 0.1)"
    )
