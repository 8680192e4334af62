"""Saving a model to a folder and rebuilding it by name, fitted state included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import mmplug
from mmplug import ComponentError, ConfigError, Encoder, EncoderOutput, MmplugError, Pipeline
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import load_plugins

from .conftest import Plugin

CONFIG = {
    "encoders": {"word": {"name": "vocab-bag"}},
    "fusion": {"name": "mean", "dim": 3},
    "head": {"name": "classification", "num_classes": 2},
}


class VocabBag(Encoder):
    """Bag of words over a vocabulary learned by ``fit``, saved as vocab.json."""

    modality = "word"

    def __init__(self, dim: int = 4, size: int = 16):
        super().__init__()
        self.output_dim = dim
        self.vocab: dict[str, int] = {}
        self.embed = torch.nn.EmbeddingBag(size, dim, mode="sum")

    def fit(self, raws: list[Any]) -> None:
        for word in sorted(set(raws)):
            self.vocab.setdefault(word, len(self.vocab) + 1)

    def save_fitted(self, directory: Path) -> None:
        if self.vocab:
            (directory / "vocab.json").write_text(json.dumps(self.vocab))

    def load_fitted(self, directory: Path) -> None:
        self.vocab = json.loads((directory / "vocab.json").read_text())

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        return {"ids": torch.tensor([[self.vocab.get(w, 0)] for w in raws])}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        return EncoderOutput(self.embed(inputs["ids"]))


def _host(toy_plugin: Any) -> PluginHost:
    host = load_plugins(entry_points=False)
    host.add(toy_plugin, name="toy", distribution="toy-plugin", version="1.0")
    host.add(
        Plugin(register_encoders=[(("vocab-bag", VocabBag), {"modality": "word"})]),
        name="bag",
        distribution="bag-plugin",
        version="2.0",
    )
    return host


def test_round_trip_restores_weights_and_fitted_state(toy_plugin: Any, tmp_path: Path) -> None:
    registry = _host(toy_plugin).registry
    model = mmplug.build_model(CONFIG, registry=registry).eval()
    model.fit_encoders([{"word": "cat"}, {"word": "dog"}, {"word": "cat"}])
    samples = [{"word": "dog"}, {"word": "cat"}, {}]

    saved = mmplug.save_model(model, tmp_path / "model")
    assert (saved / "fitted" / "word" / "vocab.json").is_file()
    loaded = mmplug.load_model(saved, registry=registry).eval()

    assert loaded.encoders["word"].vocab == {"cat": 1, "dog": 2}
    torch.testing.assert_close(
        loaded(Pipeline.from_model(loaded).collate(samples)).logits,
        model(Pipeline.from_model(model).collate(samples)).logits,
    )
    assert loaded.resolved is not None
    assert loaded.resolved.to_config() == model.resolved.to_config()  # type: ignore[union-attr]


def test_resave_replaces_the_previous_save_and_leaves_no_staging(
    toy_plugin: Any, tmp_path: Path
) -> None:
    registry = _host(toy_plugin).registry
    model = mmplug.build_model(CONFIG, registry=registry)
    mmplug.save_model(model, tmp_path / "model")
    assert not (tmp_path / "model" / "fitted").exists()  # nothing fitted, nothing written
    model.fit_encoders([{"word": "cat"}])
    mmplug.save_model(model, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / "fitted" / "word" / "vocab.json").is_file()


def test_failed_save_keeps_the_previous_one(toy_plugin: Any, tmp_path: Path) -> None:
    registry = _host(toy_plugin).registry
    model = mmplug.build_model(CONFIG, registry=registry)
    model.fit_encoders([{"word": "cat"}])
    mmplug.save_model(model, tmp_path / "model")
    before = (tmp_path / "model" / "model.safetensors").read_bytes()

    def broken(directory: Path) -> None:
        raise OSError("disk full")

    model.encoders["word"].save_fitted = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        mmplug.save_model(model, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_load_needs_the_plugins_that_built_it(toy_plugin: Any, tmp_path: Path) -> None:
    model = mmplug.build_model(CONFIG, registry=_host(toy_plugin).registry)
    mmplug.save_model(model, tmp_path / "model")
    with pytest.raises(ConfigError) as info:
        mmplug.load_model(tmp_path / "model", registry=load_plugins(entry_points=False).registry)
    assert "config.yaml" in str(info.value)
    assert "bag-plugin:vocab-bag" in str(info.value)


def test_weights_that_do_not_fit_are_named(toy_plugin: Any, tmp_path: Path) -> None:
    registry = _host(toy_plugin).registry
    mmplug.save_model(mmplug.build_model(CONFIG, registry=registry), tmp_path / "model")
    config = tmp_path / "model" / "config.yaml"
    config.write_text(config.read_text().replace("dim: 3", "dim: 5"))
    with pytest.raises(MmplugError, match=r"config\.yaml is damaged.*delete checksums\.json"):
        mmplug.load_model(tmp_path / "model", registry=registry)
    (tmp_path / "model" / "checksums.json").unlink()  # changed on purpose: load it unchecked
    with pytest.raises(ComponentError, match=r"model\.safetensors does not fit") as info:
        mmplug.load_model(tmp_path / "model", registry=registry)
    assert "fusion.project.word.weight" in str(info.value)


def test_not_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(MmplugError, match=r"config\.yaml is missing"):
        mmplug.load_model(tmp_path)


def test_a_model_without_a_config_cannot_be_saved(toy_host: PluginHost, tmp_path: Path) -> None:
    model = mmplug.build_model(
        {**CONFIG, "encoders": {"word": {"name": "char-bag"}}}, registry=toy_host.registry
    )
    model.resolved = None
    with pytest.raises(MmplugError, match="build_model"):
        mmplug.save_model(model, tmp_path / "model")
