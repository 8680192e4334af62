"""Config-by-name assembly (``mmplug.model.build``) and the running model's handling of
absent modalities (``mmplug.model.multimodal``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import mmplug
from mmplug import ComponentError, Encoder, EncoderOutput, Pipeline
from mmplug.model.build import build_model
from mmplug.model.multimodal import MultimodalModel
from mmplug.plugins.host import PluginHost

from .conftest import make_toy_host

CONFIG = {
    "model": {
        "encoders": {
            "word": {"name": "char-bag", "dim": 8},
            "stats": {"name": "mlp", "input_size": 3, "dim": 6},
        },
        "fusion": {"name": "mean", "dim": 5},
        "head": {"name": "classification", "num_classes": 4},
    }
}


@pytest.fixture
def model(toy_host: PluginHost) -> MultimodalModel:
    torch.manual_seed(0)
    return build_model(CONFIG, registry=toy_host.registry).eval()


def run(model: MultimodalModel, rows: list[dict[str, Any]]) -> Any:
    """The model's output for raw samples, through its pipeline."""
    return model(Pipeline.from_model(model).collate(rows))


def samples(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: torch.tensor(v, dtype=torch.float32) if k == "stats" else v for k, v in row.items()}
        for row in rows
    ]


def test_assembly_wires_dims_in_sorted_key_order(model: MultimodalModel) -> None:
    assert list(model.encoders) == ["stats", "word"]
    assert model.fusion.project["stats"].in_features == 6
    assert model.fusion.project["word"].in_features == 8
    assert model.head.input_dim == 5 and model.head.output_dim == 4
    assert sorted(model.modalities) == ["stats", "word"]
    assert model.modalities["word"].name == "word"
    assert "char-bag (toy-plugin 1.0)" in model.describe()


def test_build_from_a_file_with_overrides(tmp_path, toy_host: PluginHost) -> None:
    import yaml

    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    model = build_model(path, registry=toy_host.registry, overrides=["model.fusion.dim=7"])
    assert model.fusion.output_dim == 7 and model.head.input_dim == 7


def test_forward_shapes_and_present_masks(model: MultimodalModel) -> None:
    batch = Pipeline.from_model(model).collate(
        samples({"word": "cat", "stats": [1, 2, 3]}, {"word": "hippo"}, {"stats": [0, 0, 1]}, {})
    )
    assert batch.present["word"].tolist() == [True, True, False, False]
    assert batch.present["stats"].tolist() == [True, False, True, False]
    assert batch.inputs["word"]["ids"].shape[0] == 2  # only the present samples
    output = model(batch)
    assert output.logits.shape == (4, 4) and output.fused.shape == (4, 5)
    assert torch.isfinite(output.logits).all()
    word = output.features["word"]
    assert word.pooled.shape == (4, 8)
    assert word.pooled[2:].abs().sum() == 0  # absent rows are zero
    assert word.mask is not None and not word.mask[2:].any()  # and masked out
    assert word.tokens is not None and word.tokens.shape[:2] == word.mask.shape


def test_encoders_never_see_absent_values(toy_host: PluginHost) -> None:
    seen: list[list[str]] = []

    class Spy(Encoder):
        modality = "word"
        output_dim = 2

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(1, 2)

        def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
            seen.append(list(raws))
            return {"x": torch.tensor([[float(len(r))] for r in raws])}

        def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
            return EncoderOutput(self.linear(inputs["x"]))

    class SpyPlugin:
        @mmplug.hookimpl
        def register_encoders(self, register):
            register("spy", Spy, modality="word")

    toy_host.add(SpyPlugin(), name="spy")
    config = {"model": {**CONFIG["model"], "encoders": {"word": {"name": "spy"}}}}
    model = build_model(config, registry=toy_host.registry)
    run(model, [{"word": "a"}, {"word": None}, {}, {"word": "ccc"}])
    assert seen == [["a", "ccc"]]
    seen.clear()
    run(model, [{}, {}])  # nobody has it: the encoder is not called at all
    assert seen == []


def test_a_sample_does_not_depend_on_its_neighbours(model: MultimodalModel) -> None:
    alone = run(model, samples({"word": "cat"})).logits
    crowd = run(
        model,
        samples(
            {"stats": [5, 5, 5]},
            {"word": "cat"},
            {"word": "a much longer word", "stats": [1, 1, 1]},
        ),
    ).logits
    torch.testing.assert_close(alone[0], crowd[1])


@settings(max_examples=25, deadline=None)
@given(
    word_present=st.booleans(),
    others=st.lists(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=3, max_size=3),
        min_size=1,
        max_size=4,
    ),
)
def test_a_sample_lacking_a_modality_is_not_touched_by_its_neighbours_values(
    toy_plugin: Any, word_present: bool, others: list[list[float]]
) -> None:
    """The neighbours' values do reach the stats encoder; the sample that lacks stats gets a
    zero row (and present False) there, and its output must not change."""
    host = make_toy_host(toy_plugin)  # hypothesis runs many examples per fixture
    torch.manual_seed(0)
    model = build_model(CONFIG, registry=host.registry).eval()
    row = {"word": "dog"} if word_present else {}
    alone = run(model, samples(row)).logits
    crowd = run(model, samples(row, *({"stats": values} for values in others))).logits
    torch.testing.assert_close(crowd[0], alone[0])


def test_all_absent_batch_is_finite_and_dtype_follows_the_model(model: MultimodalModel) -> None:
    model = model.to(torch.float64)
    output = run(model, [{}, {}, {}])
    assert output.logits.dtype == torch.float64
    assert torch.isfinite(output.logits).all()


def test_gradients_reach_encoders_fusion_and_head(model: MultimodalModel) -> None:
    model.train()
    output = run(model, samples({"word": "cat", "stats": [1, 2, 3]}, {"word": "dog"}))
    targets = torch.tensor([0, 3])
    assert model.unimodal_heads is not None  # on by default with two keys: trained too
    loss = model.head.loss(output.logits, targets)
    (loss + sum(model.unimodal_losses(output, targets).values())).backward()
    for name, param in model.named_parameters():
        if name != "fusion.nothing":  # used only when no modality is present
            assert param.grad is not None, name


def test_fit_encoders_gets_present_raws_of_its_key(toy_host: PluginHost) -> None:
    model = build_model(CONFIG, registry=toy_host.registry)
    fitted: dict[str, list] = {}
    for key, encoder in model.encoder_items():
        encoder.fit = lambda raws, key=key: fitted.setdefault(key, raws)  # type: ignore[method-assign]
    model.fit_encoders([{"word": "a"}, {"word": None, "stats": 1}, {}])
    assert fitted == {"word": ["a"], "stats": [1]}


def _host_with(toy_plugin: Any, factory: Any) -> PluginHost:
    """The toy components plus an encoder 'broken' of acme-broken 0.1 made by ``factory``."""
    host = make_toy_host(toy_plugin)

    class Broken:
        @mmplug.hookimpl
        def register_encoders(self, register):
            register("broken", factory, modality="word")

    host.add(Broken(), name="broken", distribution="acme-broken", version="0.1")
    return host


def _broken_model(toy_plugin: Any, factory: Any) -> None:
    host = _host_with(toy_plugin, factory=factory)
    config = {"model": {**CONFIG["model"], "encoders": {"word": {"name": "broken"}}}}
    build_model(config, registry=host.registry)


def test_factory_failure_names_path_component_and_distribution(toy_plugin: Any) -> None:
    def explode() -> None:
        raise RuntimeError("out of cheese")

    with pytest.raises(ComponentError) as info:
        _broken_model(toy_plugin, explode)
    assert str(info.value) == (
        "model.encoders.word: encoder 'broken' from acme-broken 0.1 failed to build: "
        "RuntimeError: out of cheese"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_factory_returning_the_wrong_kind_of_object(toy_plugin: Any) -> None:
    with pytest.raises(ComponentError, match="its factory returned Linear, not a Encoder"):
        _broken_model(toy_plugin, lambda: nn.Linear(2, 2))


def test_unimportable_lazy_factory(toy_plugin: Any) -> None:
    with pytest.raises(ComponentError, match=r"can't import its factory 'nowhere\.at\.all:Enc'"):
        _broken_model(toy_plugin, "nowhere.at.all:Enc")


def test_encoder_with_wrong_output_shape_is_caught(toy_plugin: Any) -> None:
    class Liar(Encoder):
        modality = "word"
        output_dim = 4

        def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
            return {"n": torch.ones(len(raws), 1)}

        def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
            return EncoderOutput(torch.zeros(inputs["n"].shape[0], 3))

    host = _host_with(toy_plugin, factory=Liar)
    config = {"model": {**CONFIG["model"], "encoders": {"word": {"name": "broken"}}}}
    model = build_model(config, registry=host.registry)
    with pytest.raises(ComponentError, match=r"pooled of shape \(1, 3\), expected \(1, 4\)"):
        run(model, [{"word": "x"}])


def test_missing_interface_attributes_are_component_errors(toy_plugin: Any) -> None:
    class NoModality(Encoder):
        output_dim = 2

        def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
            return {}

        def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
            return EncoderOutput(torch.zeros(1, 2))

    with pytest.raises(ComponentError, match="its object's modality is None"):
        _broken_model(toy_plugin, NoModality)

    class NoDim(NoModality):
        modality = "word"
        output_dim = None  # type: ignore[assignment]

    with pytest.raises(ComponentError, match="has output_dim None, not a positive int"):
        _broken_model(toy_plugin, NoDim)


def test_encoder_output_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"pooled must be \[B, D\]"):
        EncoderOutput(torch.zeros(3))
    with pytest.raises(ValueError, match="tokens given without mask"):
        EncoderOutput(torch.zeros(2, 4), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="mask must be bool"):
        EncoderOutput(torch.zeros(2, 4), torch.zeros(2, 5, 4), torch.ones(2, 5))


def test_build_model_uses_installed_plugins_by_default(monkeypatch, toy_host: PluginHost) -> None:
    import mmplug.plugins.loading

    monkeypatch.setattr(mmplug.plugins.loading, "default_registry", lambda: toy_host.registry)
    assert isinstance(mmplug.build_model(CONFIG), MultimodalModel)


def test_the_model_orders_its_parts_by_key_whatever_order_it_is_given(
    model: MultimodalModel,
) -> None:
    """Built directly (no config, which sorts on its own), from encoders and modalities in
    reverse order: the same parameters in the same order, the same outputs."""
    encoders = dict(reversed(model.encoder_items()))
    modalities = dict(reversed(model.modalities.items()))
    assert model.unimodal_heads is not None
    heads = dict(reversed(list(model.unimodal_heads.items())))
    again = MultimodalModel(
        encoders, model.fusion, model.head, modalities, unimodal_heads=heads
    ).eval()
    assert list(again.state_dict()) == list(model.state_dict())
    assert again.keys == ["stats", "word"] and list(again.modalities) == ["stats", "word"]
    rows = samples({"word": "cat", "stats": [1, 2, 3]}, {"word": "a"}, {"stats": [0, 1, 0]})
    torch.testing.assert_close(run(again, rows).logits, run(model, rows).logits)


@settings(max_examples=60, deadline=None)
@given(
    presence=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=12
    ),
    probability=st.sampled_from([0.0, 0.3, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_modality_dropout_never_drops_everything_a_sample_has(
    presence: list[tuple[bool, bool, bool]], probability: float, seed: int
) -> None:
    from mmplug.model.multimodal import Batch, drop_modalities

    keys = ("a", "b", "c")
    present = {k: torch.tensor([row[i] for row in presence]) for i, k in enumerate(keys)}
    # each encoder's inputs hold the present samples' batch indices, to check which remain
    inputs = {
        k: {"index": torch.nonzero(present[k]).squeeze(1).float()} if present[k].any() else {}
        for k in keys
    }
    batch = Batch(size=len(presence), inputs=inputs, present=present)
    torch.manual_seed(seed)
    dropped = drop_modalities(batch, probability)

    kept = torch.stack([dropped.present[k] for k in keys], dim=1)
    before = torch.stack([present[k] for k in keys], dim=1)
    assert not (kept & ~before).any()  # nothing absent becomes present
    assert torch.equal(kept.any(dim=1), before.any(dim=1))  # a sample keeps one at least
    if probability == 0.0:
        assert torch.equal(kept, before)
    for k in keys:
        rows = dropped.inputs[k].get("index", torch.empty(0))
        assert rows.tolist() == torch.nonzero(dropped.present[k]).squeeze(1).float().tolist()


def test_modality_dropout_only_in_training(toy_host: PluginHost) -> None:
    config = {
        "encoders": {
            "stats": {"name": "mlp", "input_size": 2, "dim": 4},
            "word": {"name": "char-bag", "dim": 4},
        },
        "fusion": {"name": "mean", "dim": 4},
        "head": {"name": "classification", "num_classes": 2},
        "modality_dropout": 0.9,
    }
    model = build_model(config, registry=toy_host.registry)
    assert model.modality_dropout == 0.9
    rows = [{"stats": [float(i), 1.0], "word": "w" * (i + 1)} for i in range(16)]
    pipeline = Pipeline.from_model(model)
    batch = pipeline.collate([pipeline.load(row) for row in rows])
    model.eval()
    torch.manual_seed(0)
    first = model(batch).logits
    torch.manual_seed(1)
    assert torch.equal(first, model(batch).logits)  # nothing dropped in eval
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(batch).logits, first)
