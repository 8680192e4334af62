"""The ``text`` modality: strings in, anything else a DataError; absent texts never loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import mmplug
from mmplug import DataError
from mmplug.plugins.host import PluginHost
from mmplug_text.modality import TextModality


@pytest.mark.parametrize("text", ["a cat", "", "  ", "日本語", "line\nbreak"])
def test_a_string_is_its_own_raw_value(text: str) -> None:
    assert TextModality().load(text) == text


def test_a_str_subclass_becomes_a_plain_str() -> None:
    class Fancy(str):
        pass

    loaded = TextModality().load(Fancy("cat"))
    assert type(loaded) is str
    assert loaded == "cat"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (3, "int: 3"),
        (["a", "b"], "list: ['a', 'b']"),
        (float("nan"), "float: nan"),
        (b"x", "bytes: b'x'"),
    ],
)
def test_a_non_string_is_an_error_naming_it(value: Any, named: str) -> None:
    with pytest.raises(DataError, match="expected a string") as info:
        TextModality().load(value)
    assert named in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        json.loads('"a \\ud800 b"'),  # valid JSON, not valid text
        b"caf\xe9".decode("utf-8", "surrogateescape"),  # a Latin-1 byte in --text
    ],
    ids=["json-escape", "command-line-byte"],
)
def test_a_lone_surrogate_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(DataError, match=r"lone surrogate '\\udc?[0-9a-f]+' at character \d"):
        TextModality().load(text)


def test_a_text_over_max_characters_is_refused_before_tokenization() -> None:
    assert TextModality(max_characters=5).load("hello") == "hello"
    with pytest.raises(DataError, match=r"6 characters, over the limit of 5 .*'hello!'"):
        TextModality(max_characters=5).load("hello!")
    with pytest.raises(DataError, match=r"1,000,001 characters, over the limit of 100,000"):
        TextModality().load("x" * 1_000_001)


def test_none_is_not_loaded() -> None:
    with pytest.raises(DataError, match="absent"):
        TextModality().load(None)


def test_absent_texts_are_skipped_by_the_model(text_host: PluginHost, tiny_bert: Path) -> None:
    config = {
        "encoders": {"text": {"name": "bert", "pretrained": str(tiny_bert)}},
        "fusion": {"name": "first"},
        "head": {"name": "classification", "num_classes": 2},
    }
    model = mmplug.build_model(config, registry=text_host.registry).eval()
    rows: list[dict[str, Any]] = [{"text": "the cat"}, {"text": None}, {}, {"text": ""}]
    pipeline = mmplug.Pipeline.from_model(model)
    samples = [pipeline.load(row) for row in rows]
    assert samples[1] == {} and samples[2] == {}

    batch = pipeline.collate(samples)
    assert batch.present["text"].tolist() == [True, False, False, True]
    assert batch.inputs["text"]["input_ids"].shape[0] == 2  # the encoder saw present texts only
    with torch.no_grad():
        features = model(batch).features["text"]
    assert features.mask is not None
    assert not features.pooled[1:3].any()
    assert not features.mask[1:3].any()
    assert features.mask[3].sum() == 2  # the empty text is [CLS] [SEP]

    with pytest.raises(DataError, match="int: 7"):
        pipeline.load({"text": 7})


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value", [_nested(100_000), list(range(1_000_000)), {"k": "v" * 1_000_000}]
)
def test_the_message_for_a_huge_or_deep_value_is_short(value: Any) -> None:
    # a full repr of the first would recurse too deeply, of the others take megabytes
    with pytest.raises(DataError, match="expected a string") as info:
        TextModality().load(value)
    assert len(str(info.value)) < 300
