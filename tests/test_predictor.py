"""Using a trained run: predicting samples and manifests, evaluating, loading by checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import CLASSES, toy_config, toy_data, toy_rows, write_rows

import mmplug
from mmplug import DataError, MmplugError
from mmplug.runs.predictor import Predictor, load
from mmplug.training.progress import Reporter

from .conftest import make_toy_host

STATS = [[0.1, 0.5, -1.0, 1.0], [2.2, 0.0, 0.3, 1.0], [4.1, -0.4, 0.8, 1.0], [1.0, 1.0, 1.0, 1.0]]


def train_run(root: Path, toy_plugin: ModuleType, **data: Any) -> Path:
    host = make_toy_host(toy_plugin)
    config = toy_config({**toy_data(root / "data"), **data}, epochs=3)
    return mmplug.train(
        config, out=root / "run", registry=host.registry, reporter=Reporter(quiet=True)
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, toy_plugin: ModuleType) -> Path:
    return train_run(tmp_path_factory.mktemp("raise"), toy_plugin)


@pytest.fixture(scope="module")
def skipping_run(tmp_path_factory: pytest.TempPathFactory, toy_plugin: ModuleType) -> Path:
    return train_run(tmp_path_factory.mktemp("skip"), toy_plugin, on_error="skip")


@pytest.fixture(scope="module")
def predictor(run: Path, toy_plugin: ModuleType) -> Predictor:
    return load(run, make_toy_host(toy_plugin).registry, device="cpu")


@pytest.fixture(scope="module")
def skipping(skipping_run: Path, toy_plugin: ModuleType) -> Predictor:
    return load(skipping_run, make_toy_host(toy_plugin).registry, device="cpu")


def manifest(path: Path, rows: list[dict[str, Any]], *, blank_after: int = -1) -> Path:
    """A JSONL manifest; a blank line after row ``blank_after`` shifts the line numbers."""
    lines = [
        json.dumps(row) + "\n" + ("\n" if i == blank_after else "") for i, row in enumerate(rows)
    ]
    path.write_text("".join(lines))
    return path


def close(got: dict[str, float], expected: dict[str, float]) -> bool:
    return got.keys() == expected.keys() and all(
        got[name] == pytest.approx(expected[name], abs=1e-5) for name in got
    )


# -- predict ------------------------------------------------------------------------------


def test_a_prediction_names_the_runs_classes(predictor: Predictor) -> None:
    assert predictor.keys == ["stats", "word"]
    assert predictor.task.classes == CLASSES
    [prediction] = predictor.predict({"stats": STATS[2], "word": "red"})
    assert set(prediction) == {"label", "probabilities"}
    assert list(prediction["probabilities"]) == list(CLASSES)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction["label"] == max(
        prediction["probabilities"], key=prediction["probabilities"].get
    )
    # the first number carries the class: 4.1 is "cat" (2 * 2.0), 0.1 is "ant"
    assert prediction["label"] == "cat"
    assert predictor.predict({"stats": STATS[0]})[0]["label"] == "ant"


def test_a_list_gives_one_answer_per_sample_in_order(predictor: Predictor) -> None:
    samples = [
        {"stats": s, "word": w} for s, w in zip(STATS, ["red", "blue", None, "green"], strict=True)
    ]
    alone = [predictor.predict(sample)[0] for sample in samples]
    together = predictor.predict(samples, batch_size=3)  # a full batch and a partial one
    assert len(together) == 4
    for got, expected in zip(together, alone, strict=True):
        assert got["label"] == expected["label"]
        assert close(got["probabilities"], expected["probabilities"])
    assert predictor.predict([]) == []


def test_an_unknown_key_names_the_sample(predictor: Predictor) -> None:
    with pytest.raises(DataError, match=r"sample 1 has 'colour', which the model has no encoder"):
        predictor.predict([{"stats": STATS[0]}, {"stats": STATS[1], "colour": "red"}])


def test_a_value_that_cannot_load_names_sample_and_key(predictor: Predictor) -> None:
    with pytest.raises(DataError, match=r"^sample 2, key 'stats': numbers: can't read 'x,y'"):
        predictor.predict([{"stats": STATS[0]}, {"word": "red"}, {"stats": "x,y"}])
    with pytest.raises(DataError, match=r"^sample 0, key 'word': word: expected a string, got 3"):
        predictor.predict({"word": 3})


# -- predict_manifest ---------------------------------------------------------------------


def id_rows() -> list[dict[str, Any]]:
    rows = toy_rows(5, 7)
    for index, row in enumerate(rows):
        row["id"] = f"r{index}"
    return rows


def test_one_line_per_row_in_file_order(predictor: Predictor, tmp_path: Path) -> None:
    rows = id_rows()
    path = manifest(tmp_path / "new.jsonl", rows, blank_after=1)
    lines = list(predictor.predict_manifest(path, keep=["id"], batch_size=2))
    assert [line["row"] for line in lines] == [1, 2, 4, 5, 6]  # line numbers; line 3 is blank
    assert [line["id"] for line in lines] == ["r0", "r1", "r2", "r3", "r4"]
    expected = predictor.predict([{"stats": r["stats"], "word": r["word"]} for r in rows])
    for line, answer in zip(lines, expected, strict=True):
        assert set(line) == {"row", "id", "label", "probabilities"}
        assert line["label"] == answer["label"]
        assert close(line["probabilities"], answer["probabilities"])


def test_without_keep_only_the_row_and_the_prediction(predictor: Predictor, tmp_path: Path) -> None:
    path = manifest(tmp_path / "new.jsonl", id_rows())
    [first, *_] = predictor.predict_manifest(path)
    assert set(first) == {"row", "label", "probabilities"}


def test_a_missing_keep_column_is_a_data_error(predictor: Predictor, tmp_path: Path) -> None:
    path = manifest(tmp_path / "new.jsonl", id_rows())
    with pytest.raises(
        DataError, match=r"no column 'idx' \(given with --keep\); did you mean 'id'"
    ):
        list(predictor.predict_manifest(path, keep=["idx"]))


def test_a_column_the_manifest_lacks_is_absent(predictor: Predictor, tmp_path: Path) -> None:
    path = manifest(tmp_path / "stats_only.jsonl", [{"stats": s} for s in STATS])
    lines = list(predictor.predict_manifest(path))
    expected = predictor.predict([{"stats": s} for s in STATS])
    assert [line["row"] for line in lines] == [1, 2, 3, 4]
    for line, answer in zip(lines, expected, strict=True):
        assert line["label"] == answer["label"]
        assert close(line["probabilities"], answer["probabilities"])
    # different from what the same rows give with a word: the word is really left out
    with_word = predictor.predict({"stats": STATS[0], "word": "red"})[0]
    assert not close(lines[0]["probabilities"], with_word["probabilities"])


def test_a_manifest_with_none_of_the_models_columns(predictor: Predictor, tmp_path: Path) -> None:
    path = manifest(tmp_path / "other.jsonl", [{"image": "a.png", "label": "ant"}])
    with pytest.raises(DataError, match=r"none of the model's columns \(stats, word\) is in it"):
        list(predictor.predict_manifest(path))


def bad_rows() -> list[dict[str, Any]]:
    return [
        {"id": "a", "stats": STATS[0], "word": "red"},
        {"id": "b", "stats": "x,y", "word": "red"},
        {"id": "c", "stats": STATS[2]},
    ]


def test_a_bad_row_is_an_error_naming_it(predictor: Predictor, tmp_path: Path) -> None:
    assert predictor.data.on_error == "raise"
    path = manifest(tmp_path / "bad.jsonl", bad_rows())
    with pytest.raises(DataError, match=r"bad\.jsonl row 2, column 'stats': numbers: can't read"):
        list(predictor.predict_manifest(path, keep=["id"]))


def test_with_on_error_skip_a_bad_row_becomes_an_error_line(
    skipping: Predictor, tmp_path: Path
) -> None:
    assert skipping.data.on_error == "skip"
    path = manifest(tmp_path / "bad.jsonl", bad_rows())
    lines = list(skipping.predict_manifest(path, keep=["id"], batch_size=2))
    assert [line["row"] for line in lines] == [1, 2, 3]
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert set(lines[1]) == {"row", "id", "error"}
    assert "bad.jsonl row 2, column 'stats'" in lines[1]["error"]
    assert "can't read 'x,y'" in lines[1]["error"]
    assert "error" not in lines[0] and "error" not in lines[2]
    assert lines[2]["label"] == skipping.predict({"stats": STATS[2]})[0]["label"]

    without_keep = list(skipping.predict_manifest(path))
    assert without_keep[1].keys() == {"row", "error"}


# -- evaluate -----------------------------------------------------------------------------


def test_evaluate_a_labelled_manifest(predictor: Predictor, tmp_path: Path) -> None:
    rows = toy_rows(18, 11)
    path = write_rows(tmp_path / "labelled.jsonl", rows)
    evaluation = predictor.evaluate(path, batch_size=4)
    assert evaluation.count == 18
    lines = list(predictor.predict_manifest(path))
    right = sum(line["label"] == row["label"] for line, row in zip(lines, rows, strict=True))
    assert evaluation.metrics["accuracy"] == pytest.approx(right / 18)
    assert evaluation.confusion is not None
    index = {name: i for i, name in enumerate(CLASSES)}
    expected = [[0] * 3 for _ in CLASSES]
    for line, row in zip(lines, rows, strict=True):
        expected[index[row["label"]]][index[line["label"]]] += 1
    assert evaluation.confusion == expected
    assert evaluation.loss > 0


def test_evaluate_without_a_column_or_without_labels(predictor: Predictor, tmp_path: Path) -> None:
    rows = [{"stats": row["stats"], "label": row["label"]} for row in toy_rows(6, 3)]
    evaluation = predictor.evaluate(write_rows(tmp_path / "stats.jsonl", rows))
    assert evaluation.count == 6  # word absent in every row
    unlabelled = write_rows(tmp_path / "unlabelled.jsonl", [{"stats": STATS[0]}])
    with pytest.raises(DataError, match=r"no column 'label' \(the label column, data\.label\)"):
        predictor.evaluate(unlabelled)


# -- load ---------------------------------------------------------------------------------


def test_a_misspelt_checkpoint_gets_a_suggestion(run: Path, toy_plugin: ModuleType) -> None:
    registry = make_toy_host(toy_plugin).registry
    with pytest.raises(
        MmplugError, match=r"checkpoint must be 'best' or 'last', not 'bset'; did you mean 'best'\?"
    ):
        load(run, registry, checkpoint="bset")
    with pytest.raises(MmplugError, match=r"not 'final'$"):
        load(run, registry, checkpoint="final")


def test_the_last_checkpoint_loads(run: Path, toy_plugin: ModuleType, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    shutil.rmtree(copy / "best")  # only last/ is left to load
    registry = make_toy_host(toy_plugin).registry
    with pytest.raises(MmplugError, match="has no best/ checkpoint yet"):
        load(copy, registry, device="cpu")
    last = load(copy, registry, checkpoint="last", device="cpu")
    saved = load_file(str(copy / "last" / "model.safetensors"))
    weights = last.model.state_dict()
    assert saved.keys() <= weights.keys()
    assert all(torch.equal(weights[name], tensor) for name, tensor in saved.items())
    assert last.task.classes == CLASSES
    assert not last.model.training
    assert last.device == torch.device("cpu")
    [prediction] = last.predict({"stats": STATS[1]})
    assert prediction["label"] in CLASSES
