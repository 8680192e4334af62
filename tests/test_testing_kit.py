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
    with pytest.raises(LookupError, match="no component or entry point of distribution 'nobody'"):
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
        ("fusion:leaky:absent_has_no_influence", "filling absent rows, their masks and padded"),
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
        import sys

        from mmplug.testing import Conformance

        spec = importlib.util.spec_from_file_location("toy", {str(toy_plugin.__file__)!r})
        toy = importlib.util.module_from_spec(spec)
        sys.modules["toy"] = toy  # importable by name, as an installed plugin is
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
    # 2 modalities x 4 checks + 2 encoders x 9 + 1 fusion x 9; the toy encoders have no freeze
    result.assert_outcomes(passed=33, deselected=2)


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


# -- the stricter checks catch what they are for ----------------------------------------------


class BatchMeanFusion(Fusion):
    """Centres each row on the batch mean: a row alone gives another output."""

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__()
        self.output_dim = 2
        self.project = nn.ModuleDict({k: nn.Linear(d, 2) for k, d in input_dims.items()})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        out = sum(
            torch.where(present[k][:, None], self.project[k](features[k].pooled), 0.0)
            for k in sorted(features)
        )
        return out - out.mean(0, keepdim=True)  # type: ignore[no-any-return, union-attr]


class PaddingReader(ParameterFree):
    """Averages every token, padding included: what padded positions hold leaks in."""

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        parts = []
        for key in sorted(features):
            out = features[key]
            tokens = out.tokens if out.tokens is not None else out.pooled[:, None]
            here = present[key][:, None]
            parts.append(torch.where(here, torch.nan_to_num(tokens).mean(1), 0.0))
        return torch.cat(parts, dim=-1)


class DefaultsDiffer(BatchNormalised):
    def __init__(self, width: int = 5) -> None:  # the params model says 3
        super().__init__()


class StalePreprocessor(Encoder):
    """Hands out a copy of its vocabulary: a preprocessor made before fit never learns it."""

    modality = "word"
    output_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.vocab: dict[str, int] = {}
        self.embed = nn.Embedding(16, 2)

    def fit(self, raws: list[Any]) -> None:
        self.vocab = {word: i + 1 for i, word in enumerate(sorted(set(raws)))}

    def preprocessor(self) -> Any:
        return _Lookup(dict(self.vocab))

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return _Lookup(self.vocab)(raws)

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        return EncoderOutput(self.embed(inputs["ids"]))


class _Lookup:
    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return {"ids": torch.tensor([self.vocab.get(raw, 0) for raw in raws])}


class WrongTask(mmplug.Head):
    task = "ranking"
    output_dim = 2

    def forward(self, fused: Tensor) -> Tensor:
        return fused[:, :2]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return outputs.sum()

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs

    def metrics(self) -> dict[str, Any]:
        return {}


def _stricter_kit(toy_plugin: ModuleType) -> Conformance:
    from pydantic import Field

    class WidthParams(mmplug.Params):
        width: int = Field(default=3)

    host = make_toy_host(toy_plugin)
    host.add(
        Plugin(
            register_encoders=[
                (("defaults", DefaultsDiffer), {"modality": "numbers", "params": WidthParams}),
                (("stale", StalePreprocessor), {"modality": "word"}),
            ],
            register_fusions=[
                (("batch-mean", BatchMeanFusion), {}),
                (("padding", PaddingReader), {}),
            ],
            register_heads=[(("ranking", lambda input_dim: WrongTask()), {})],
        ),
        name="broken",
        distribution="acme-broken",
        version="0.1",
    )
    return Conformance(
        "acme-broken",
        registry=host.registry,
        samples=TOY_SAMPLES,
        targets={"ranking": lambda outputs: outputs},
    )


@pytest.mark.parametrize(
    ("check_id", "expected"),
    [
        ("fusion:batch-mean:batch_independent", "row 0 alone differs from it in the batch"),
        ("fusion:padding:absent_has_no_influence", "changed the output"),
        ("encoder:defaults:constructor_defaults", "width: 5 in the factory, 3 in the params"),
        ("encoder:stale:preprocessor", "preprocessor() made before fit differs"),
        ("head:ranking:task", "task_class() raised ComponentError"),
    ],
)
def test_stricter_checks_catch_their_bug(
    toy_plugin: ModuleType, check_id: str, expected: str
) -> None:
    message = _run(_stricter_kit(toy_plugin), check_id)
    assert expected in message and "acme-broken 0.1" in message


def test_variants_run_every_check_again_with_their_params(toy_plugin: ModuleType) -> None:
    kit = _toy_kit(toy_plugin, variants={"mean": [{"dim": 3}]})
    ids = {check.id for check in kit.checks()}
    assert "fusion:mean[dim=3]:batch_independent" in ids and "fusion:mean:key_order" in ids
    [check] = [c for c in kit.checks() if c.id == "fusion:mean[dim=3]:output_shape"]
    check()
    broken = _toy_kit(toy_plugin, variants={"mean": [{"dim": 0}]})
    [check] = [c for c in broken.checks() if c.id == "fusion:mean[dim=0]:output_shape"]
    with pytest.raises(AssertionError, match=r"fusion 'mean' \(toy-plugin 1.0\) with dim=0"):
        check()


HOOKS_ONLY = """
import mmplug

@mmplug.hookimpl
def register_heads(register):
    register("cheap-head", "nowhere:Head")
"""

TORCH_IN_COMMANDS = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    import torch  # every `mmplug` start would pay for it
    cli.add_parser("heavy")
"""


def test_an_entry_point_that_imports_torch_or_does_not_load_fails(fake_dist: Any) -> None:
    from mmplug.testing.checks.plugin import check_imports_no_torch

    check_imports_no_torch(fake_dist("mmplug-cheap", "1.0", HOOKS_ONLY))
    heavy = fake_dist("mmplug-heavy", "1.0", TORCH_IN_COMMANDS)
    with pytest.raises(AssertionError, match=f"entry-point module '{heavy}' imports torch"):
        check_imports_no_torch(heavy)
    with pytest.raises(AssertionError, match=r"'nowhere_at_all' fails to load: failed to import"):
        check_imports_no_torch("nowhere_at_all")
    broken = fake_dist("mmplug-broken", "1.0", "import json\n")
    with pytest.raises(AssertionError, match="implements no mmplug hook"):
        check_imports_no_torch(broken)
