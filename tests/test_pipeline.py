"""The data pipeline (mmplug.data.pipeline): loading, collating, manifests as datasets, and
what data-loader workers receive (the pipeline, never the model's weights)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

import mmplug
from mmplug import DataError, Pipeline
from mmplug.data.manifest import read_manifest
from mmplug.data.pipeline import Example, LoadedBatch, ManifestDataset, Skipped, make_loader
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import ClassificationTask
from mmplug.plugins.host import PluginHost

from .conftest import Plugin
from .training_helpers import write_rows

CONFIG = {
    "encoders": {
        "word": {"name": "char-bag", "dim": 8},
        "stats": {"name": "mlp", "input_size": 3, "dim": 6},
    },
    "fusion": {"name": "mean", "dim": 5},
    "head": {"name": "classification", "num_classes": 2},
}


@pytest.fixture
def pipeline(toy_host: PluginHost) -> Pipeline:
    return Pipeline.from_model(mmplug.build_model(CONFIG, registry=toy_host.registry))


def test_keys_are_sorted_and_must_match() -> None:
    class Loader(mmplug.Modality):
        name = "x"

        def load(self, value: Any, *, root: Any = None) -> Any:
            return value

    def identity(raws: list[Any], *, train: bool = False) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor([len(r) for r in raws])}

    both = Pipeline({"b": Loader(), "a": Loader()}, {"a": identity, "b": identity})
    assert both.keys == ["a", "b"] and list(both.preprocessors) == ["a", "b"]
    with pytest.raises(ValueError, match="must have the same keys"):
        Pipeline({"a": Loader()}, {"b": identity})


def test_load_uses_each_keys_modality_and_names_the_culprit(pipeline: Pipeline) -> None:
    loaded = pipeline.load({"stats": "1,2,3", "word": "cat"})
    assert loaded["stats"].tolist() == [1.0, 2.0, 3.0] and loaded["word"] == "cat"
    assert pipeline.load({"stats": None}) == {}
    with pytest.raises(DataError, match=r"^key 'stats': numbers: can't read 'x,y'"):
        pipeline.load({"stats": "x,y"})
    with pytest.raises(DataError, match=r"^row 7 of mine: numbers"):
        pipeline.load({"stats": "x,y"}, where=lambda key: "row 7 of mine")
    with pytest.raises(DataError, match=r"the sample has 'txt', which the model has no encoder"):
        pipeline.load({"txt": "b"})


def test_collate_gives_each_preprocessor_the_present_samples_only(pipeline: Pipeline) -> None:
    samples = [pipeline.load(row) for row in ({"word": "ab", "stats": "1,2,3"}, {"word": "c"}, {})]
    batch = pipeline.collate(samples)
    assert batch.size == 3
    assert batch.present["word"].tolist() == [True, True, False]
    assert batch.present["stats"].tolist() == [True, False, False]
    assert (
        batch.inputs["word"]["ids"].shape[0] == 2 and batch.inputs["stats"]["values"].shape[0] == 1
    )
    assert pipeline.collate([{}, {}]).inputs == {"stats": {}, "word": {}}
    with pytest.raises(DataError, match=r"sample 1 has 'txt'"):
        pipeline.collate([{"word": "a"}, {"txt": "b"}])


def _dataset(
    pipeline: Pipeline, tmp_path: Path, rows: list[dict[str, Any]], **data: Any
) -> ManifestDataset:
    manifest = read_manifest(write_rows(tmp_path / "rows.jsonl", rows))
    config = DataConfig(train=manifest.path, **data)
    task = ClassificationTask(("no", "yes"))
    return ManifestDataset.from_config(manifest, pipeline, config, task=task, missing="absent")


def test_a_manifest_row_is_loaded_with_its_target_and_errors_name_row_and_column(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rows = [
        {"word": "cat", "stats": [1, 2, 3], "label": "yes"},
        {"word": "dog", "label": "no"},
        {"word": "eel", "stats": "x", "label": "no"},
        {"word": "fox", "label": "maybe"},
    ]
    dataset = _dataset(pipeline, tmp_path, rows)
    first = dataset[0]
    assert isinstance(first, Example) and first.target is not None and int(first.target) == 1
    assert set(dataset[1].values) == {"word"}  # type: ignore[union-attr]
    bad = dataset[2]
    assert isinstance(bad, Skipped) and bad.fatal and bad.row == 3
    assert bad.error.startswith(f"{dataset.manifest.path} row 3, column 'stats': numbers")
    label = dataset[3]
    assert (
        isinstance(label, Skipped) and "column 'label': label 'maybe' is not one of" in label.error
    )
    strict = _dataset(pipeline, tmp_path, rows[1::-1], require_all=True)
    assert "row 1, column 'stats': no value, and data.require_all is set" in strict[0].error  # type: ignore[union-attr]
    skipping = _dataset(pipeline, tmp_path, rows, on_error="skip")
    assert not skipping[2].fatal  # type: ignore[union-attr]


def test_the_loader_batches_skips_and_shuffles_by_seed(pipeline: Pipeline, tmp_path: Path) -> None:
    rows = [{"word": "w" * (i + 1), "stats": [i, 0, 1], "label": "yes"} for i in range(10)]
    rows[4]["stats"] = "bad"
    dataset = _dataset(pipeline, tmp_path, rows, on_error="skip")
    loaded = list(make_loader(dataset, batch_size=4, train=False))
    assert [len(b.indices) for b in loaded] == [4, 3, 2]  # line 5 left out of the second
    assert [s.row for b in loaded for s in b.skipped] == [5]
    second: LoadedBatch = loaded[1]
    assert second.indices == [5, 6, 7] and second.batch is not None and second.batch.size == 3
    assert second.targets is not None and second.targets.tolist() == [1, 1, 1]

    def order(seed: int) -> list[int]:
        return [
            i for b in make_loader(dataset, batch_size=4, train=True, seed=seed) for i in b.indices
        ]

    assert order(3) == order(3) and order(3) != order(4) and sorted(order(3)) != order(3)


class _Payload(pickle.Pickler):
    """Pickles like DataLoader does for a worker, counting the parameters on the way."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        super().__init__(self.buffer)
        self.parameters = 0

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Parameter):
            self.parameters += obj.numel()
        return NotImplemented


def worker_payload(dataset: ManifestDataset) -> tuple[int, int]:
    """(bytes, parameter values) of what a DataLoader worker receives: dataset and collate."""
    loader = make_loader(dataset, batch_size=4, train=True, num_workers=2)
    pickler = _Payload()
    pickler.dump((loader.dataset, loader.collate_fn, loader.worker_init_fn))
    return len(pickler.buffer.getvalue()), pickler.parameters


def test_workers_receive_the_pipeline_without_the_models_weights(tmp_path: Path) -> None:
    """The text, image and audio encoders of this repository hand workers their tokenizer,
    transforms and filter bank only: no parameter, kilobytes instead of the weights."""
    from mmplug_demo.dataset import generate
    from mmplug_demo.run import ENCODERS

    data = generate(tmp_path / "data", train=8, val=1, test=1, image_size=32, seconds=0.25)
    config = {
        "encoders": ENCODERS,
        "fusion": {"name": "concat", "dim": 16},
        "head": {"name": "classification", "num_classes": 8},
    }
    model = mmplug.build_model(config)
    pipeline = Pipeline.from_model(model)
    manifest = read_manifest(data.train)
    dataset = ManifestDataset.from_config(
        manifest,
        pipeline,
        DataConfig(train=manifest.path, columns={"text": "caption"}),
        missing="error",
    )
    model.fit_encoders([dataset[i].values for i in range(len(dataset))])  # type: ignore[union-attr]
    size, parameters = worker_payload(dataset)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert parameters == 0
    assert size < 500_000 < weights  # the demo model's weights are about 47 MB
    # and what a worker computes from it is what the model's encoders compute
    batch = next(iter(make_loader(dataset, batch_size=4, train=False, num_workers=1))).batch
    expected = pipeline.collate([dataset[i].values for i in range(4)])  # type: ignore[union-attr]
    assert batch is not None
    for key in model.keys:
        for name, tensor in expected.inputs[key].items():
            torch.testing.assert_close(batch.inputs[key][name], tensor)


def test_the_default_preprocessor_carries_the_encoder(pipeline: Pipeline, tmp_path: Path) -> None:
    """An encoder that keeps the default preprocessor() sends its weights along (the toy
    encoders do): what the docs tell plugin authors to avoid for heavy encoders."""
    dataset = _dataset(pipeline, tmp_path, [{"word": "a", "stats": [1, 2, 3], "label": "no"}])
    _, parameters = worker_payload(dataset)
    assert parameters > 0


class _Picky:
    """A preprocessor that refuses a whole batch over one value (as tabular-mlp does for a
    row with the wrong number of columns): it can't say which manifest row."""

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, torch.Tensor]:
        if "bad" in raws:
            raise DataError(f"picky: value {raws.index('bad')} of the batch is bad")
        return {"n": torch.tensor([len(raw) for raw in raws])}


def _picky_dataset(pipeline: Pipeline, tmp_path: Path, **data: Any) -> ManifestDataset:
    picky = Pipeline(pipeline.modalities, {**pipeline.preprocessors, "word": _Picky()})
    rows = [{"word": w, "stats": [1, 2, 3], "label": "no"} for w in ("ok", "bad", "fine", "bad")]
    manifest = read_manifest(write_rows(tmp_path / "picky.jsonl", rows))
    return ManifestDataset.from_config(
        manifest,
        picky,
        DataConfig(train=manifest.path, **data),
        task=ClassificationTask(("no", "yes")),
        missing="absent",
    )


def test_a_value_a_preprocessor_refuses_is_named_by_its_manifest_row(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    [batch] = make_loader(_picky_dataset(pipeline, tmp_path), batch_size=4, train=False)
    assert [s.row for s in batch.skipped] == [2, 4] and all(s.fatal for s in batch.skipped)
    assert batch.skipped[0].error.endswith(
        "picky.jsonl row 2: key 'word': picky: value 0 of the batch is bad"
    )
    skipping = _picky_dataset(pipeline, tmp_path, on_error="skip")
    [batch] = make_loader(skipping, batch_size=4, train=False)
    assert batch.indices == [0, 2] and batch.batch is not None and batch.batch.size == 2
    assert not any(s.fatal for s in batch.skipped)


def _broken_model(
    toy_host: PluginHost, toy_plugin: ModuleType, encoder: str
) -> mmplug.MultimodalModel:
    """The toy model with its word encoder from a plugin ``broken-plugin 2.0``: ``flat-bag``
    returns its ids without the leading n, ``narrow-bag`` pooled vectors narrower than its
    output_dim."""

    class FlatBag(toy_plugin.CharBagEncoder):  # type: ignore[name-defined,misc]
        def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, torch.Tensor]:
            inputs = super().preprocess(raws, train=train)
            return {name: tensor.flatten() for name, tensor in inputs.items()}

    class NarrowBag(toy_plugin.CharBagEncoder):  # type: ignore[name-defined,misc]
        def forward(self, inputs: dict[str, torch.Tensor]) -> mmplug.EncoderOutput:
            return mmplug.EncoderOutput(super().forward(inputs).pooled[:, :7])

    params = {"modality": "word", "params": toy_plugin.CharBagParams}
    broken = Plugin(
        register_encoders=[(("flat-bag", FlatBag), params), (("narrow-bag", NarrowBag), params)]
    )
    toy_host.add(broken, name="broken", distribution="broken-plugin", version="2.0")
    config = {**CONFIG, "encoders": {**CONFIG["encoders"], "word": {"name": encoder, "dim": 8}}}
    return mmplug.build_model(config, registry=toy_host.registry)


def test_a_preprocess_tensor_without_leading_n_is_named_where_it_happens(
    toy_host: PluginHost, toy_plugin: ModuleType, tmp_path: Path
) -> None:
    """Not an IndexError in modality dropout or the scatter back into batch order: an error
    naming the key, the component, its distribution and the tensor, in the main process too
    when a loader worker collates."""
    pipeline = Pipeline.from_model(_broken_model(toy_host, toy_plugin, "flat-bag"))
    expected = (
        r"key 'word': preprocess of encoder 'flat-bag' from broken-plugin 2\.0, .*FlatBag "
        r"\(.*\) returned 'ids' of shape \(4,\) for 2 value\(s\): every tensor preprocess "
        r"returns has a leading dimension n = 2"
    )
    with pytest.raises(mmplug.ComponentError, match=expected):
        pipeline.collate([{"word": "ab"}, {"word": "cd", "stats": torch.ones(3)}])
    rows = [{"word": w, "stats": [1, 2, 3], "label": "no"} for w in ("ab", "cd")]
    dataset = _dataset(pipeline, tmp_path, rows)
    [loaded] = make_loader(dataset, batch_size=2, train=True, num_workers=1)
    assert loaded.batch is None and loaded.broken is not None
    with pytest.raises(mmplug.ComponentError, match=expected) as raised:
        loaded.raise_fatal()
    assert "Traceback" not in str(raised.value)


def test_an_encoder_output_of_the_wrong_size_names_its_distribution(
    toy_host: PluginHost, toy_plugin: ModuleType
) -> None:
    model = _broken_model(toy_host, toy_plugin, "narrow-bag")
    batch = Pipeline.from_model(model).collate([{"word": "ab"}])
    expected = (
        r"encoder 'narrow-bag' of key 'word' \(broken-plugin 2\.0, NarrowBag\) returned pooled "
        r"of shape \(1, 7\), expected \(1, 8\)"
    )
    with pytest.raises(mmplug.ComponentError, match=expected):
        model(batch)
