"""Modality params from the config (``model.modalities.KEY``): validated with their paths like
every other component's, built into the loader of that key, kept by runs and saved models."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cli
from training_helpers import toy_config, toy_data

import mmplug
from mmplug import DataError
from mmplug.errors import ConfigError
from mmplug.model.config import load_config
from mmplug.model.resolve import resolve_model
from mmplug.plugins.host import PluginHost
from mmplug.training.progress import Reporter

MODEL: dict[str, Any] = {
    "encoders": {
        "stats": {"name": "mlp", "input_size": 3},
        "more": {"name": "mlp", "input_size": 2},
        "word": {"name": "char-bag", "dim": 8},
    },
    "fusion": {"name": "mean"},
    "head": {"name": "classification", "num_classes": 2},
}


def model_with(**modalities: dict[str, Any]) -> dict[str, Any]:
    return {"model": {**copy.deepcopy(MODEL), "modalities": modalities}}


def issues(config: dict[str, Any], host: PluginHost) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        resolve_model(load_config(config), host.registry)
    return {issue.path: issue.message for issue in info.value.issues}


def test_a_key_left_out_gets_the_modality_defaults(toy_host: PluginHost) -> None:
    resolved = resolve_model(load_config(model_with()), toy_host.registry)
    assert resolved.modalities["stats"].spec.name == "numbers"
    assert resolved.modalities["stats"].kwargs() == {"size": None}
    assert resolved.to_config()["modalities"]["word"] == {"name": "toy-plugin:word"}


def test_params_reach_the_loader_of_that_key_alone(toy_host: PluginHost) -> None:
    model = mmplug.build_model(model_with(stats={"size": 3}), registry=toy_host.registry)
    assert model.modalities["stats"].size == 3
    assert model.modalities["more"].size is None  # same modality, its own params
    pipeline = mmplug.Pipeline.from_model(model)
    assert pipeline.load({"stats": [1, 2, 3], "more": [1, 2, 3, 4]})["more"].shape == (4,)
    with pytest.raises(DataError, match="expected 3 numbers, got 2"):
        pipeline.load({"stats": [1, 2]})


def test_keys_with_the_same_modality_and_params_share_one_loader(toy_host: PluginHost) -> None:
    model = mmplug.build_model(
        model_with(stats={"size": 3}, more={"size": 3}), registry=toy_host.registry
    )
    assert model.modalities["stats"] is model.modalities["more"]


def test_an_override_sets_a_modality_param(toy_host: PluginHost) -> None:
    config = load_config(model_with(), ["model.modalities.more.size=2"])
    assert resolve_model(config, toy_host.registry).modalities["more"].kwargs() == {"size": 2}


@pytest.mark.parametrize(
    ("modalities", "path", "message"),
    [
        ({"stats": {"sise": 3}}, "model.modalities.stats.sise", "did you mean 'size'?"),
        ({"stats": {"size": 0}}, "model.modalities.stats.size", "greater than or equal to 1"),
        ({"stat": {"size": 3}}, "model.modalities.stat", "no encoder has key 'stat'; did you"),
        ({"word": {"name": "numbers"}}, "model.modalities.word.name", "consumes modality 'word'"),
        ({"word": {"name": "nope"}}, "model.modalities.word.name", "unknown modality 'nope'"),
        ({"Stats": {}}, "model.modalities.Stats", "invalid modality key"),
    ],
)
def test_a_bad_entry_is_named_by_its_path(
    toy_host: PluginHost, modalities: dict[str, Any], path: str, message: str
) -> None:
    config = model_with(**modalities)
    if path == "model.modalities.Stats":  # a structural error, found before the registry
        with pytest.raises(ConfigError) as info:
            load_config(config)
        found = {issue.path: issue.message for issue in info.value.issues}
    else:
        found = issues(config, toy_host)
    assert message in found[path], found


def test_a_qualified_name_picks_the_modality(toy_host: PluginHost) -> None:
    config = model_with(word={"name": "toy-plugin:word"})
    assert resolve_model(load_config(config), toy_host.registry).modalities["word"].spec.name == (
        "word"
    )


def test_a_run_keeps_its_modality_params_for_evaluation_and_prediction(
    tmp_path: Path, toy_host: PluginHost
) -> None:
    data = toy_data(tmp_path / "data")
    config = toy_config(data)
    config["model"]["modalities"] = {"stats": {"size": 4}}
    run = mmplug.train(
        config, out=tmp_path / "run", registry=toy_host.registry, reporter=Reporter(quiet=True)
    )
    saved = (run / "config.yaml").read_text()
    assert "size: 4" in saved
    predictor = mmplug.load(run, registry=toy_host.registry)
    assert predictor.model.modalities["stats"].size == 4
    with pytest.raises(DataError, match="expected 4 numbers, got 3"):
        predictor.predict([{"stats": [1, 2, 3], "word": "ant"}])
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_info_lists_and_validate_prints_a_modality_params(toy_site: Path, tmp_path: Path) -> None:
    info = cli(toy_site, "info", "numbers", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    [row] = [line.split() for line in info.stdout.splitlines() if "size" in line]
    assert row[:5] == ["size", "int", "|", "None", "null"]  # field, type, default
    config = tmp_path / "config.json"
    config.write_text(json.dumps(model_with(stats={"size": 3})))
    checked = cli(toy_site, "validate", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    at = lines.index("  model.modalities.stats: numbers (toy-plugin 1.0)")
    assert lines[at + 1].strip() == "size=3"
    assert "  model.modalities.word: word (toy-plugin 1.0)" in lines


def test_a_modality_problem_is_reported_with_its_encoders_own(toy_host: PluginHost) -> None:
    config = model_with(stats={"size": 0})
    config["model"]["encoders"]["stats"]["dims"] = 8
    assert set(issues(config, toy_host)) == {
        "model.encoders.stats.dims",
        "model.modalities.stats.size",
    }
