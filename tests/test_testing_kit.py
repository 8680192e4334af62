"""The conformance kit (mmplug.testing): good components pass, broken ones fail by name."""

from __future__ import annotations

import enum
import re
from types import ModuleType
from typing import Annotated, Any, Literal

import pytest
import torch
from pydantic import Field, model_validator
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
        ("fusion:leaky:absent_has_no_influence", "nan in the absent rows of modality 'a'"),
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
    # 2 modalities x 4 checks + 2 encoders x 10 + 1 fusion x 10; the toy encoders have no freeze
    result.assert_outcomes(passed=36, deselected=2)


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


class ClaimsDeterministic(StalePreprocessor):
    """Says its preprocessing is the same in training, then drops words at random there."""

    deterministic_preprocess = True

    def preprocessor(self) -> Any:
        return _Lookup(self.vocab)

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        ids = _Lookup(self.vocab)(raws)["ids"]
        if train:
            ids = ids * (torch.rand(ids.shape) > 0.5)
        return {"ids": ids}


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
    class WidthParams(mmplug.Params):
        width: int = Field(default=3)

    host = make_toy_host(toy_plugin)
    host.add(
        Plugin(
            register_encoders=[
                (("defaults", DefaultsDiffer), {"modality": "numbers", "params": WidthParams}),
                (("stale", StalePreprocessor), {"modality": "word"}),
                (("claims", ClaimsDeterministic), {"modality": "word"}),
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
        (
            "encoder:claims:deterministic_preprocess",
            "deterministic_preprocess is set, but preprocess(train=True) differs from train=False",
        ),
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


# -- the variants the kit makes, and reports that name the first violation --------------------


class PoolParams(mmplug.Params):
    pooling: Literal["max", "mean"] = Field(default="max", description="How tokens are pooled.")


class PoolingFusion(Fusion):
    """Pools each modality's tokens and sums the present ones' projections. ``mean`` weights
    tokens by their mask, and NaN padding times a zero weight is NaN: the default ``max``
    passes every check, ``mean`` lets padding in."""

    def __init__(self, input_dims: dict[str, int], pooling: str = "max") -> None:
        super().__init__()
        self.pooling = pooling
        self.output_dim = 2
        self.project = nn.ModuleDict({k: nn.Linear(d, 2) for k, d in input_dims.items()})

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        out = torch.zeros(len(next(iter(present.values()))), 2)
        for key in sorted(features):
            here = present[key][:, None]
            pooled = torch.where(here, self._pool(features[key], here), 0.0)
            out = out + torch.where(here, self.project[key](pooled), 0.0)
        return out

    def _pool(self, feature: EncoderOutput, here: Tensor) -> Tensor:
        if feature.tokens is None or feature.mask is None:
            return feature.pooled
        mask = (feature.mask & here)[..., None]
        if self.pooling == "mean":
            weights = mask.to(feature.tokens.dtype)
            return (feature.tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return feature.tokens.masked_fill(~mask, float("-inf")).amax(1)


class UngatedSecond(PoolingFusion):
    """Gates every modality by ``present`` but its second: that one's absent rows leak in."""

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        out = torch.zeros(len(next(iter(present.values()))), 2)
        for index, key in enumerate(sorted(features)):
            here = present[key][:, None] | (index == 1)
            out = out + torch.where(here, self.project[key](features[key].pooled), 0.0)
        return out


class EmptyMean(PoolingFusion):
    """A learned offset plus the mean of the present modalities' projections: the offset
    divided by 0 (NaN or inf) for a row with none."""

    def __init__(self, input_dims: dict[str, int], pooling: str = "max") -> None:
        super().__init__(input_dims, pooling)
        self.offset = nn.Parameter(torch.zeros(2))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        total = self.offset + sum(
            torch.where(present[k][:, None], self.project[k](features[k].pooled), 0.0)
            for k in sorted(features)
        )
        count = torch.stack([present[k] for k in sorted(features)]).sum(0)[:, None]
        return total / count  # type: ignore[no-any-return]


class Order(enum.Enum):
    SORTED = "sorted"
    GIVEN = "given"


class ModeParams(mmplug.Params):
    dim: int = Field(default=2, ge=1)
    pooling: Literal["max", "mean", "sum"] = Field(default="max")
    bias: bool = Field(default=True)
    normalize: bool | None = Field(default=None)
    scale: Annotated[Literal[1, 2] | None, Field(description="Annotated, optional.")] = 1
    order: Order = Field(default_factory=lambda: Order.SORTED)
    size: int | Literal["auto"] = Field(default="auto", description="Not every value listed.")

    @model_validator(mode="after")
    def _no_sum_with_bias(self) -> ModeParams:
        if self.pooling == "sum" and self.bias:
            raise ValueError("pooling: sum takes no bias")
        return self


def _variant_kit(toy_plugin: ModuleType, **kwargs: Any) -> Conformance:
    host = make_toy_host(toy_plugin)
    fusions: list[tuple[str, type[Fusion], type[mmplug.Params]]] = [
        ("pool", PoolingFusion, PoolParams),
        ("ungated", UngatedSecond, PoolParams),
        ("empty-mean", EmptyMean, PoolParams),
        ("modes", PoolingFusion, ModeParams),
    ]
    host.add(
        Plugin(
            register_fusions=[((name, cls), {"params": params}) for name, cls, params in fusions]
        ),
        name="broken",
        distribution="acme-broken",
        version="0.1",
    )
    return Conformance("acme-broken", registry=host.registry, **kwargs)


def _outcomes(kit: Conformance, component: str) -> dict[str, str]:
    """check id -> ``passed``, ``skipped`` or the failure's message, for one component."""
    outcomes = {}
    for check in kit.checks():
        if check.id.split(":")[1].split("[")[0] != component:
            continue
        try:
            check()
        except AssertionError as exc:
            outcomes[check.id] = str(exc)
        except pytest.skip.Exception:
            outcomes[check.id] = "skipped"
        else:
            outcomes[check.id] = "passed"
    return outcomes


def _failures(outcomes: dict[str, str]) -> dict[str, str]:
    return {id: out for id, out in outcomes.items() if out not in ("passed", "skipped")}


def test_a_mode_that_only_breaks_off_default_is_caught_and_named(toy_plugin: ModuleType) -> None:
    outcomes = _outcomes(_variant_kit(toy_plugin), "pool")
    assert "fusion:pool:absent_has_no_influence" in outcomes
    [(check_id, message)] = _failures(outcomes).items()
    assert check_id == "fusion:pool[pooling=mean]:absent_has_no_influence"
    assert message.startswith(
        "fusion 'pool' (acme-broken 0.1) with pooling=mean: with 2 modalities {'a': 3, 'b': 5}, "
        "nan in the padded tokens of modality 'a' changed the output: "
    )


def test_a_leak_names_the_modality_and_a_finite_measure(toy_plugin: ModuleType) -> None:
    failures = _failures(_outcomes(_variant_kit(toy_plugin), "ungated"))
    assert set(failures) == {
        "fusion:ungated:absent_has_no_influence",
        "fusion:ungated[pooling=mean]:absent_has_no_influence",
    }
    message = failures["fusion:ungated:absent_has_no_influence"]
    assert "nan in the absent rows of modality 'b' (pooled, tokens, mask) changed" in message
    assert re.search(
        r"changed the output: 4 entries are NaN/inf where the expected value is finite \(first "
        r"at \(2, 0\): nan against -?\d\.\d+\); rows \[2, 3\] of 4$",
        message,
    ), message


def test_nan_for_rows_with_nothing_present_fails_one_check(toy_plugin: ModuleType) -> None:
    outcomes = _outcomes(_variant_kit(toy_plugin), "empty-mean")
    failures = _failures(outcomes)
    assert set(failures) == {
        "fusion:empty-mean:all_absent_finite",
        "fusion:empty-mean[pooling=mean]:all_absent_finite",
    }
    assert (
        "all-absent rows of a batch with nothing present has 6 NaN/inf values of 6"
        in (failures["fusion:empty-mean:all_absent_finite"])
    )
    assert outcomes["fusion:empty-mean:float64"] == "passed"
    # its output is not finite, so neither are its gradients: finite ones are checked once fixed
    assert outcomes["fusion:empty-mean:gradients"] == "skipped"


def test_every_other_value_of_each_mode_param_is_a_variant(toy_plugin: ModuleType) -> None:
    kit = _variant_kit(toy_plugin, variants={"modes": [{"dim": 3}, {"pooling": "mean"}]})
    labels = [case.label for case in kit.cases() if case.spec.name == "modes"]
    # one param changed at a time, after the defaults and the variants given; pooling=mean is
    # given already, the params model refuses pooling=sum with bias, size lists no values
    assert labels == [
        "",
        "dim=3",
        "pooling=mean",
        "bias=false",
        "normalize=false",
        "normalize=true",
        "scale=2",
        "scale=null",
        "order=given",
    ]
    ids = {check.id for check in kit.checks()}
    assert "fusion:modes[bias=false]:batch_independent" in ids
    assert "fusion:modes[bias=false]:constructor_defaults" not in ids  # for the defaults only


def test_skip_variants_opts_out_by_param_or_variant_and_never_goes_stale(
    toy_plugin: ModuleType,
) -> None:
    for entry in ("pooling", "pooling=mean"):
        kit = _variant_kit(toy_plugin, skip_variants={"pool": {entry: "needs a GPU"}})
        skipped = {c.id: c.skip_reason for c in kit.checks() if c.skip_reason}
        # one skipped test for the variant's checks, with the reason
        assert skipped == {
            "fusion:pool[pooling=mean]:opted_out": "fusion 'pool' (acme-broken 0.1) with "
            "pooling=mean: opted out with skip_variants: needs a GPU"
        }
        assert not [c for c in kit.checks() if c.id.startswith("fusion:pool[pooling=mean]:f")]
    with pytest.raises(LookupError, match=r"opts out of 'pooling=median', which is no variant"):
        _variant_kit(toy_plugin, skip_variants={"pool": {"pooling=median": "?"}}).checks()
    with pytest.raises(LookupError, match=r"makes for 'acme-broken:modes' \(it makes: pooling="):
        _variant_kit(toy_plugin, skip_variants={"acme-broken:modes": {"dim": "?"}}).checks()
    with pytest.raises(LookupError, match=r"names 'poool', .* \(did you mean 'pool'\?\)"):
        _variant_kit(toy_plugin, skip_variants={"poool": {"pooling": "?"}}).checks()
