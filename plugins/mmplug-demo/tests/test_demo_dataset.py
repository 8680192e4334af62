"""The synthetic demo dataset: layout, file formats, labels and determinism."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmplug.errors import ConfigError
from mmplug_demo.dataset import CLASSES, DemoData, generate

# The adjective sets as the spec states them, kept apart from the module on purpose.
CALM = {"calm", "quiet", "gentle", "peaceful", "sleepy", "relaxed", "serene", "soft"}
ALERT = {"loud", "urgent", "alarmed", "frantic", "noisy", "hectic", "tense", "restless"}
SMALL = {"train": 16, "val": 8, "test": 8, "image_size": 32}


def rows(manifest: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return generate(tmp_path_factory.mktemp("demo"), **SMALL)


def test_classes() -> None:
    assert len(CLASSES) == 8
    assert sorted(CLASSES) == CLASSES
    assert "alert-circle-high" in CLASSES and "calm-square-low" in CLASSES


def test_manifests_counts_fields_and_ids(data: DemoData) -> None:
    assert data.classes == CLASSES
    names = {p.name for p in data.root.iterdir()}
    assert names == {"images", "audio", "train.jsonl", "val.jsonl", "test.jsonl"}
    ids: list[str] = []
    for split, manifest in [("train", data.train), ("val", data.val), ("test", data.test)]:
        assert manifest.parent == data.root
        split_rows = rows(manifest)
        assert len(split_rows) == SMALL[split]
        for row in split_rows:
            assert set(row) == {"id", "caption", "image", "audio", "label"}
            assert row["id"].startswith(f"{split}-")
            assert row["image"] == f"images/{row['id']}.png"
            assert row["audio"] == f"audio/{row['id']}.wav"
            assert row["label"] in CLASSES
        ids += [row["id"] for row in split_rows]
    assert "train-0001" in ids
    assert len(set(ids)) == len(ids) == 32


def test_images_and_audio_read_back(data: DemoData) -> None:
    for row in rows(data.train) + rows(data.test):
        with Image.open(data.root / row["image"]) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
        with wave.open(str(data.root / row["audio"]), "rb") as clip:
            assert (clip.getnchannels(), clip.getsampwidth()) == (1, 2)
            assert (clip.getframerate(), clip.getnframes()) == (16000, 8000)


def test_label_bits_match_caption_and_audio(data: DemoData) -> None:
    for row in rows(data.train) + rows(data.val):
        mood, shape, pitch = row["label"].split("-")
        words = set(re.findall(r"[a-z]+", row["caption"]))
        assert bool(words & CALM) == (mood == "calm"), row
        assert bool(words & ALERT) == (mood == "alert"), row
        assert shape in {"circle", "square"}
        with wave.open(str(data.root / row["audio"]), "rb") as clip:
            samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
        peak_hz = np.abs(np.fft.rfft(samples)).argmax() * 16000 / len(samples)
        low, high = (195, 405) if pitch == "low" else (1195, 2005)
        assert low <= peak_hz <= high, row


def test_all_classes_appear_and_images_differ(tmp_path: Path) -> None:
    data = generate(tmp_path, train=64, val=0, test=0, image_size=16, seconds=0.05)
    train = rows(data.train)
    assert {row["label"] for row in train} == set(CLASSES)
    assert rows(data.val) == rows(data.test) == []
    assert len({(tmp_path / row["image"]).read_bytes() for row in train}) == 64


def test_same_seed_same_bytes_other_seed_differs(data: DemoData, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", **SMALL)
    assert files(again.root) == files(data.root)
    other = files(generate(tmp_path / "other", seed=1, **SMALL).root)
    assert other.keys() == files(data.root).keys()
    assert other["train.jsonl"] != files(data.root)["train.jsonl"]
    assert other["images/train-0001.png"] != files(data.root)["images/train-0001.png"]
    assert other["audio/train-0001.wav"] != files(data.root)["audio/train-0001.wav"]


def test_a_split_does_not_depend_on_the_other_sizes(data: DemoData, tmp_path: Path) -> None:
    fewer = generate(tmp_path, train=4, val=8, test=0, image_size=32)
    assert rows(fewer.val) == rows(data.val)
    assert rows(fewer.train) == rows(data.train)[:4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val": -1}, "counts"),
        ({"image_size": 8}, "image_size"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"seconds": 0.0}, "at least one sample"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path, **kwargs)
    assert not (tmp_path / "train.jsonl").exists()
