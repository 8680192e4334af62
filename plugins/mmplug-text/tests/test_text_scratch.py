"""Models built from scratch: size presets, trained vocabularies, and saving them with a run."""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import mmplug
from mmplug import ComponentError, DataError
from mmplug.plugins.host import PluginHost
from mmplug_text import SIZES
from mmplug_text.bert import BertEncoder
from mmplug_text.vocab import SPECIAL_TOKENS, preset_config, train_wordpiece

from .conftest import make_text_host

TRAIN = [
    "the cat sat on the mat",
    "a dog ran under the big red sofa",
    "The quick brown fox jumps over the lazy dog!",
    "cats and dogs, dogs and cats",
    "",
] * 4
NEW = ["a cat and a dog", "zebras are not in the training texts", ""]


def test_presets_follow_turc_et_al() -> None:
    for size, (layers, hidden) in SIZES.items():
        config = preset_config(size, vocab_size=1000, max_length=128)
        assert (config.num_hidden_layers, config.hidden_size) == (layers, hidden)
        assert config.num_attention_heads == hidden // 64
        assert config.intermediate_size == 4 * hidden
        assert config.vocab_size == 1000
    long = preset_config("bert-tiny", vocab_size=100, max_length=1024)
    assert long.max_position_embeddings >= 1024


def test_a_trained_vocabulary_is_bounded_and_puts_special_tokens_first() -> None:
    # Far more distinct characters than the vocabulary can hold.
    texts = ["".join(chr(0x4E00 + i + j) for j in range(5)) for i in range(0, 600, 5)] + TRAIN
    tokenizer = train_wordpiece(texts, vocab_size=50)
    assert tokenizer.get_vocab_size() <= 50
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    encoded = tokenizer.encode("The CAT")
    assert encoded.tokens[0] == "[CLS]" and encoded.tokens[-1] == "[SEP]"
    assert "the" in encoded.tokens  # lowercased


def test_the_same_texts_train_the_same_vocabulary() -> None:
    """tokenizers' trainer alone numbers "##" pieces in hash-map order, so vocabularies (and
    the merges chosen on count ties) differed between runs; train_wordpiece fixes the ids."""
    rng = random.Random(0)
    words = "the quiet loud dog cat runs sits park kitchen round boxy humming serene".split()  # noqa: SIM905
    texts = [" ".join(rng.choices(words, k=8)) for _ in range(300)]
    vocabularies = [train_wordpiece(texts, vocab_size=size).get_vocab() for size in [120] * 6]
    assert all(vocabulary == vocabularies[0] for vocabulary in vocabularies)
    tokenizer = train_wordpiece(texts, vocab_size=120)
    # the "##" pieces are ordinary vocabulary, not special tokens
    assert set(tokenizer.get_added_tokens_decoder()) == {0, 1, 2, 3, 4}
    assert tokenizer.encode("the dogs").tokens == ["[CLS]", "the", "dog", "##s", "[SEP]"]


@pytest.fixture
def tiny() -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(size="bert-tiny", vocab_size=200, max_length=32)


def test_a_preset_needs_fit_before_preprocess(tiny: BertEncoder) -> None:
    assert tiny.output_dim == 128
    assert tiny.model.get_input_embeddings().weight.shape == (200, 128)
    with pytest.raises(ComponentError, match=r"bert \(size bert-tiny.*call fit"):
        tiny.preprocess(["a cat"])
    with pytest.raises(DataError, match="text 1 of the batch is int"):
        tiny.fit(["a cat", 3])

    tiny.fit(TRAIN)
    inputs = tiny.preprocess(NEW)
    assert int(inputs["input_ids"].max()) < 200
    assert inputs["input_ids"][2, :2].tolist() == [2, 3]  # the empty text: [CLS] [SEP]
    out = tiny(inputs)
    assert out.pooled.shape == (3, 128)


def test_an_encoder_with_a_trained_vocabulary_pickles(tiny: BertEncoder) -> None:
    # preprocess runs in data-loader workers, which may get the encoder by pickling.
    tiny.fit(TRAIN)
    copy = pickle.loads(pickle.dumps(tiny))
    assert torch.equal(copy.preprocess(NEW)["input_ids"], tiny.preprocess(NEW)["input_ids"])


def test_from_scratch_takes_the_checkpoints_config_and_tokenizer(tiny_bert: Path) -> None:
    pretrained = BertEncoder(pretrained=str(tiny_bert))
    scratch = BertEncoder(pretrained=str(tiny_bert), from_scratch=True)
    assert not scratch.trains_vocabulary
    assert scratch.model.config.hidden_size == pretrained.model.config.hidden_size
    embeddings = scratch.model.get_input_embeddings().weight
    assert not torch.equal(embeddings, pretrained.model.get_input_embeddings().weight)
    ids = pretrained.preprocess(NEW)["input_ids"]
    assert torch.equal(scratch.preprocess(NEW)["input_ids"], ids)
    scratch.fit(TRAIN)  # the checkpoint's tokenizer is kept
    assert torch.equal(scratch.preprocess(NEW)["input_ids"], ids)


def test_from_scratch_without_tokenizer_files_trains_one(config_only_bert: Path) -> None:
    encoder = BertEncoder(pretrained=str(config_only_bert), from_scratch=True, vocab_size=120)
    assert encoder.trains_vocabulary
    assert encoder.model.get_input_embeddings().weight.shape == (120, 32)
    encoder.fit(TRAIN)
    assert encoder.preprocess(NEW)["input_ids"].max() < 120


def test_from_scratch_with_unreadable_tokenizer_files_is_an_error(
    tiny_bert: Path, tmp_path: Path
) -> None:
    # A broken tokenizer must not be silently replaced by a newly trained vocabulary.
    broken = tmp_path / "broken-bert"
    shutil.copytree(tiny_bert, broken)
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ComponentError, match="can't load the tokenizer from checkpoint directory"):
        BertEncoder(pretrained=str(broken), from_scratch=True)


CONFIG: dict[str, Any] = {
    "encoders": {"text": {"name": "bert", "size": "bert-tiny", "vocab_size": 200}},
    "fusion": {"name": "first"},
    "head": {"name": "classification", "num_classes": 2},
}


def test_a_trained_vocabulary_round_trips_through_save_and_load(
    text_host: PluginHost, tmp_path: Path
) -> None:
    model = mmplug.build_model(CONFIG, registry=text_host.registry).eval()
    model.fit_encoders([{"text": text} for text in TRAIN] + [{}])
    saved = mmplug.save_model(model, tmp_path / "run")
    assert (saved / "fitted" / "text" / "tokenizer.json").is_file()
    saved_params = yaml.safe_load((saved / "config.yaml").read_text())["model"]["encoders"]["text"]
    assert saved_params["size"] == "bert-tiny" and saved_params["pretrained"] is None

    # A fresh registry, and none of the training texts.
    loaded = mmplug.load_model(saved, registry=make_text_host().registry).eval()

    original, restored = mmplug.Pipeline.from_model(model), mmplug.Pipeline.from_model(loaded)
    samples = [restored.load({"text": text}) for text in NEW] + [{}]
    with torch.no_grad():
        expected = model(original.collate(samples)).logits
        got = loaded(restored.collate(samples)).logits
    torch.testing.assert_close(got, expected)
    assert torch.equal(
        restored.collate(samples).inputs["text"]["input_ids"],
        original.collate(samples).inputs["text"]["input_ids"],
    )


@pytest.mark.parametrize("checksums", [True, False], ids=["checked", "unchecked"])
def test_a_damaged_trained_tokenizer_is_named(
    text_host: PluginHost, tmp_path: Path, checksums: bool
) -> None:
    model = mmplug.build_model(CONFIG, registry=text_host.registry)
    model.fit_encoders([{"text": text} for text in TRAIN])
    saved = mmplug.save_model(model, tmp_path / "run")
    tokenizer = saved / "fitted" / "text" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:100])  # truncated
    if not checksums:  # a save written before checksums: the tokenizer's reader finds it
        (saved / "checksums.json").unlink()
    expected = r"tokenizer\.json is damaged" if checksums else r"fitted/text could not be read"
    with pytest.raises(mmplug.MmplugError, match=expected):
        mmplug.load_model(saved, registry=text_host.registry)


def test_a_checkpoints_own_tokenizer_is_not_saved(
    text_host: PluginHost, tiny_bert: Path, tmp_path: Path
) -> None:
    config = {**CONFIG, "encoders": {"text": {"name": "bert", "pretrained": str(tiny_bert)}}}
    model = mmplug.build_model(config, registry=text_host.registry)
    model.fit_encoders([{"text": text} for text in TRAIN])
    saved = mmplug.save_model(model, tmp_path / "run")
    assert not (saved / "fitted").exists()
