"""``mmplug compare``: the fused model next to each modality alone, chance and the late
average (``mmplug.training.compare``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmplug import ConfigError, Reporter
from mmplug.model.config import load_config
from mmplug.plugins.host import PluginHost
from mmplug.runs.evaluation import Predictions
from mmplug.training.compare import _alone, compare, late_average, table

from .training_helpers import toy_config, toy_data


def test_compare_trains_every_model_and_reports_them(
    toy_host: PluginHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = toy_config(toy_data(tmp_path), epochs=3)
    config["model"]["unimodal_heads"] = True
    config["train"]["modulation"] = 0.5
    out = tmp_path / "cmp"
    report = compare(config, registry=toy_host.registry, out=out, reporter=Reporter())
    assert {p.name for p in out.iterdir()} == {
        "fused",
        "stats-only",
        "word-only",
        "compare.json",
        "compare.png",
    }
    assert json.loads((out / "compare.json").read_text()) == report
    assert report["metric"] == "accuracy" and report["direction"] == "max"
    assert report["rows"] == 24
    models = report["models"]
    assert list(models) == ["fused", "stats only", "word only", "late average"]
    for name in ("fused", "stats only", "word only"):
        saved = json.loads((out / name.replace(" ", "-") / "results.json").read_text())
        assert models[name]["test"]["accuracy"] == saved["test"]["accuracy"]
    assert models["word only"]["keys"] == ["word"]
    # chance answers the training split's majority class: its share of the test split
    labels = {
        split: [
            json.loads(line)["label"]
            for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()
        ]
        for split in ("train", "test")
    }
    majority = max(sorted(set(labels["train"])), key=labels["train"].count)
    assert report["chance"]["accuracy"] == pytest.approx(labels["test"].count(majority) / 24)
    assert report["chance"]["auroc"] == pytest.approx(0.5)
    best = max(models[n]["test"]["accuracy"] for n in ("stats only", "word only"))
    assert report["fused_minus_best_single"] == pytest.approx(
        models["fused"]["test"]["accuracy"] - best
    )
    printed = capsys.readouterr().out
    assert "test split (24 rows); accuracy (higher is better)" in printed
    assert "late average" in printed and "chance" in printed
    # single-modality runs have nothing to balance
    alone = (out / "word-only" / "config.yaml").read_text()
    assert "unimodal_heads: false" in alone and "modulation: 0.0" in alone


def test_rerunning_compare_reuses_finished_runs(toy_host: PluginHost, tmp_path: Path) -> None:
    config = toy_config(toy_data(tmp_path), epochs=1)
    out = tmp_path / "cmp"
    first = compare(config, registry=toy_host.registry, out=out, reporter=Reporter(quiet=True))
    weights = out / "fused" / "best" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = compare(config, registry=toy_host.registry, out=out, reporter=Reporter(quiet=True))
    assert weights.stat().st_mtime_ns == before
    assert again["models"] == first["models"]


def test_a_single_modality_model_keeps_the_settings_of_its_key(toy_host: PluginHost) -> None:
    config = load_config(
        {
            "model": {
                "encoders": {
                    "stats": {"name": "mlp", "input_size": 4, "dim": 16},
                    "word": {"name": "char-bag", "dim": 8},
                },
                "fusion": {"name": "mean"},
                "head": {"name": "classification"},
                "modality_dropout": 0.3,
            },
            "data": {"train": "t.jsonl", "test": "t.jsonl", "columns": {"word": "w"}},
            "train": {
                "encoder_lr": {"word": 0.1, "stats": 0.2},
                "encoder_warmup": {"stats": 5},
                "unimodal_loss": {"stats": 2.0},
                "modulation": 0.5,
                "epochs": 7,
            },
        }
    )
    alone = _alone(config, "word")
    assert alone.model.unimodal_heads is False
    assert alone.train.unimodal_loss == 1.0 and alone.train.modulation == 0.0
    assert alone.train.encoder_warmup is None  # stats's, not word's
    assert list(alone.model.encoders) == ["word"] and alone.model.fusion.name == "mean"
    assert alone.model.modality_dropout == 0.0
    assert alone.data is not None and alone.data.columns == {"word": "w"}
    assert alone.train.encoder_lr == {"word": 0.1} and alone.train.epochs == 7


def test_a_fusion_that_needs_two_keys_gives_way_to_the_head_alone(
    toy_host: PluginHost, tmp_path: Path
) -> None:
    from .conftest import Plugin

    mean = toy_host.registry.get("fusion", "mean")

    class Pairwise(mean.load_factory()):  # type: ignore[misc]
        def __init__(self, input_dims: dict[str, int], dim: int = 64) -> None:
            if len(input_dims) < 2:
                raise ValueError("pairwise attention needs two modalities")
            super().__init__(input_dims, dim)

    plugin = Plugin(register_fusions=[(("pairwise", Pairwise), {"params": mean.params})])
    toy_host.add(plugin, name="pairs")
    config = toy_config(toy_data(tmp_path), epochs=1)
    config["model"]["fusion"] = {"name": "pairwise"}
    report = compare(
        config, registry=toy_host.registry, out=tmp_path / "cmp", reporter=Reporter(quiet=True)
    )
    assert report["models"]["word only"]["note"] == "head on the encoder alone"
    assert "name: mmplug:late" in (tmp_path / "cmp" / "word-only" / "config.yaml").read_text()
    assert report["models"]["fused"]["note"] == ""


def test_the_late_average_uses_the_modalities_a_row_has() -> None:
    singles = {
        "a only": Predictions(
            [0, 1, 2],
            torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.4]]),
            torch.tensor([0, 1, 1]),
            {"a": torch.tensor([True, True, False])},
        ),
        "b only": Predictions(  # another order, and row 2 only is absent for b
            [2, 1, 0],
            torch.tensor([[0.2, 0.8], [0.0, 1.0], [0.5, 0.5]]),
            torch.tensor([1, 1, 0]),
            {"b": torch.tensor([False, True, True])},
        ),
    }
    average, targets = late_average(singles, [0, 1, 2])
    assert torch.allclose(average, torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.4, 0.6]]))
    assert targets.tolist() == [0, 1, 1]


def test_compare_needs_a_test_split_and_two_keys(toy_host: PluginHost, tmp_path: Path) -> None:
    data = toy_data(tmp_path)
    config = toy_config({**data, "test": None})
    with pytest.raises(ConfigError, match=r"set data\.test"):
        compare(
            config, registry=toy_host.registry, out=tmp_path / "a", reporter=Reporter(quiet=True)
        )
    config = toy_config(data)
    del config["model"]["encoders"]["word"]
    with pytest.raises(ConfigError, match="two or more modality keys"):
        compare(
            config, registry=toy_host.registry, out=tmp_path / "b", reporter=Reporter(quiet=True)
        )


def test_the_table_states_the_verdict() -> None:
    report = {
        "metric": "mae",
        "direction": "min",
        "rows": 10,
        "chance": None,
        "models": {
            "fused": {"test": {"mae": 0.5, "loss": 1.0}, "note": ""},
            "a only": {"test": {"mae": 0.7}, "note": "fusion concat"},
        },
        "best_single": "a only",
        "fused_minus_best_single": 0.2,
        "fused_minus_late_average": -0.1,
    }
    lines = table(report)
    assert "mae (lower is better)" in lines[0]
    assert lines[-1].startswith("fused beats the best single modality (a only): +0.2000 mae")
    assert any(line.split()[:2] == ["a", "only"] and "fusion concat" in line for line in lines)
