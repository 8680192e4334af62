"""The ``bert`` encoder on a tiny checkpoint that the test session writes itself."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import mmplug
from mmplug import ComponentError, ConfigError, DataError
from mmplug.plugins.host import PluginHost
from mmplug_text import BertParams
from mmplug_text.bert import BertEncoder

from .conftest import VOCAB, WORDS

TEXTS = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path) -> BertEncoder:
    return BertEncoder(pretrained=str(tiny_bert)).eval()


def _reference(directory: Path, texts: list[str]) -> tuple[Any, torch.Tensor]:
    """transformers' own outputs for ``texts`` and their attention mask."""
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = BertModel.from_pretrained(directory).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch), batch["attention_mask"]


def test_mean_pooling_equals_transformers_masked_mean(
    encoder: BertEncoder, tiny_bert: Path
) -> None:
    reference, mask = _reference(tiny_bert, TEXTS)
    hidden = reference.last_hidden_state
    weights = mask.unsqueeze(-1).float()
    expected = (hidden * weights).sum(1) / weights.sum(1)

    with torch.no_grad():
        out = encoder(encoder.preprocess(TEXTS))
    assert encoder.output_dim == 32
    torch.testing.assert_close(out.pooled, expected)
    torch.testing.assert_close(out.tokens, hidden)
    assert out.mask is not None
    assert torch.equal(out.mask, mask.bool())


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_cls_and_pooler_pooling(tiny_bert: Path, pooling: str) -> None:
    reference, _ = _reference(tiny_bert, TEXTS)
    encoder = BertEncoder(pretrained=str(tiny_bert), pooling=pooling).eval()
    with torch.no_grad():
        pooled = encoder(encoder.preprocess(TEXTS)).pooled
    expected = reference.last_hidden_state[:, 0] if pooling == "cls" else reference.pooler_output
    torch.testing.assert_close(pooled, expected)


def test_batches_are_padded_to_their_longest_text(encoder: BertEncoder) -> None:
    inputs = encoder.preprocess(["a dog", "the cat"])
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape == (2, 4)  # [CLS] the cat [SEP], not max_length
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert encoder.preprocess([""])["input_ids"].tolist() == [[2, 3]]  # [CLS] [SEP]


@settings(max_examples=12, deadline=None)
@given(
    text=st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join),
    neighbour=st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join),
)
def test_padding_has_no_effect(encoder: BertEncoder, text: str, neighbour: str) -> None:
    with torch.no_grad():
        alone = encoder(encoder.preprocess([text])).pooled[0]
        batched = encoder(encoder.preprocess([neighbour, text])).pooled[1]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_long_texts_are_truncated_at_max_length(tiny_bert: Path) -> None:
    encoder = BertEncoder(pretrained=str(tiny_bert), max_length=8)
    ids = encoder.preprocess([" ".join(WORDS), "a cat"])["input_ids"]
    assert ids.shape == (2, 8)
    assert ids[0, 0] == VOCAB.index("[CLS]") and ids[0, -1] == VOCAB.index("[SEP]")
    assert ids[0, 1:-1].tolist() == [VOCAB.index(w) for w in WORDS[:6]]


def test_max_length_past_the_position_table_is_an_error(tiny_bert: Path) -> None:
    with pytest.raises(ComponentError, match=r"max_length 200 is longer .* \(128 positions\)"):
        BertEncoder(pretrained=str(tiny_bert), max_length=200)


def test_a_value_that_is_not_a_string_is_named(encoder: BertEncoder) -> None:
    with pytest.raises(DataError, match="text 1 of the batch is int: 5"):
        encoder.preprocess(["a", 5])


def _trainable(encoder: BertEncoder) -> set[str]:
    return {name for name, p in encoder.named_parameters() if p.requires_grad}


def test_freeze_leaves_nothing_trainable_and_dropout_off(tiny_bert: Path) -> None:
    encoder = BertEncoder(pretrained=str(tiny_bert), freeze=True)
    assert not _trainable(encoder)
    encoder.train()
    # frozen whole: every submodule in eval mode while training, so its outputs can be cached
    assert not any(module.training for module in encoder.modules())
    inputs = encoder.preprocess(TEXTS)
    torch.testing.assert_close(encoder(inputs).pooled, encoder(inputs).pooled)  # no dropout


def test_a_new_encoder_and_its_transformer_agree_on_training_mode(tiny_bert: Path) -> None:
    # from_pretrained hands back a transformer in eval mode; a new module trains.
    encoder = BertEncoder(pretrained=str(tiny_bert))
    assert encoder.training and encoder.model.training
    frozen = BertEncoder(pretrained=str(tiny_bert), freeze=True)
    assert not frozen.training and not frozen.model.training


def test_without_freeze_dropout_is_on_in_training(tiny_bert: Path) -> None:
    encoder = BertEncoder(pretrained=str(tiny_bert)).train()
    inputs = encoder.preprocess(TEXTS)
    assert not torch.equal(encoder(inputs).pooled, encoder(inputs).pooled)


def test_everything_but_the_unused_pooler_trains_by_default(tiny_bert: Path) -> None:
    encoder = BertEncoder(pretrained=str(tiny_bert))
    every = {name for name, _ in encoder.named_parameters()}
    assert _trainable(encoder) == {n for n in every if not n.startswith("model.pooler.")}
    with_pooler = BertEncoder(pretrained=str(tiny_bert), pooling="pooler")
    assert _trainable(with_pooler) == every


def test_trainable_layers_trains_only_the_top_layers(tiny_bert: Path) -> None:
    top = BertEncoder(pretrained=str(tiny_bert), trainable_layers=1)
    names = _trainable(top)
    assert names and all(n.startswith("model.encoder.layer.1.") for n in names)

    pooler = BertEncoder(pretrained=str(tiny_bert), trainable_layers=0, pooling="pooler")
    assert {n.split(".")[1] for n in _trainable(pooler)} == {"pooler"}

    with pytest.raises(ComponentError, match="trainable_layers 3 is more than the 2 layers"):
        BertEncoder(pretrained=str(tiny_bert), trainable_layers=3)


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    directory = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(
        vocab_size=len(VOCAB),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
    )
    DistilBertModel(config).save_pretrained(directory)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(directory)
    return directory


def test_other_bert_family_models_load_through_automodel(tiny_distilbert: Path) -> None:
    encoder = BertEncoder(pretrained=str(tiny_distilbert), trainable_layers=1)
    assert type(encoder.model).__name__ == "DistilBertModel"
    names = _trainable(encoder)
    assert names and all(n.startswith("model.transformer.layer.1.") for n in names)
    out = encoder(encoder.preprocess(TEXTS))
    assert out.pooled.shape == (3, 32)

    with pytest.raises(ComponentError, match="DistilBertModel has no pooler"):
        BertEncoder(pretrained=str(tiny_distilbert), pooling="pooler")


# -- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"freeze": True, "trainable_layers": 1}, "not both"),
        ({"trainable_layers": -1}, "greater than or equal to 0"),
        ({"size": "bert-tiny", "from_scratch": False}, "drop from_scratch: false"),
        ({"size": "bert-tiny", "pretrained": "roberta-base"}, "drop pretrained: roberta-base"),
        ({"pretrained": None}, "needs a size preset"),
        ({"size": "bert-huge"}, "bert-tiny"),
        ({"pooling": "max"}, "'mean', 'cls' or 'pooler'"),
    ],
)
def test_params_that_do_not_fit_together(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BertParams(**params)


def test_a_size_preset_normalizes_to_a_form_that_validates_again() -> None:
    params = BertParams(size="bert-tiny")
    assert (params.from_scratch, params.pretrained) == (True, None)
    assert BertParams.model_validate(params.model_dump()) == params


def test_config_errors_name_their_path(text_host: PluginHost) -> None:
    config = {
        "encoders": {"text": {"name": "bert", "pooling": "max"}},
        "fusion": {"name": "first"},
        "head": {"name": "classification", "num_classes": 2},
    }
    with pytest.raises(ConfigError, match=r"model\.encoders\.text\.pooling"):
        mmplug.build_model(config, registry=text_host.registry)


# -- checkpoints that can't be had ----------------------------------------------------------


def test_a_missing_local_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ComponentError, match="checkpoint directory not found") as info:
        BertEncoder(pretrained=str(missing))
    assert str(missing) in str(info.value)


def test_a_directory_without_a_tokenizer_is_named(config_only_bert: Path) -> None:
    with pytest.raises(ComponentError, match="has no tokenizer files"):
        BertEncoder(pretrained=str(config_only_bert))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) every attempt to resolve a host name or open a connection."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_offline_a_missing_checkpoint_is_one_clear_error(
    text_host: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    from huggingface_hub import constants

    # huggingface_hub read HF_HUB_OFFLINE and its cache folder when it was imported, before
    # this test set them; the encoder reads HF_HUB_OFFLINE again, and the cache constant is
    # what transformers looks in.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    config = {
        "encoders": {"text": {"name": "bert", "pretrained": "some-org/absent-bert"}},
        "fusion": {"name": "first"},
        "head": {"name": "classification", "num_classes": 2},
    }
    with pytest.raises(ComponentError) as info:
        mmplug.build_model(config, registry=text_host.registry)
    message = str(info.value)
    assert message.startswith("model.encoders.text: encoder 'bert' from mmplug-text")
    for part in ("'some-org/absent-bert'", "HF_HUB_OFFLINE is set", str(tmp_path / "hf" / "hub")):
        assert part in message
    assert "hf download some-org/absent-bert" in message
    assert "pretrained: /path/to/DIR" in message
    assert not no_network


def test_an_architecture_without_a_known_layer_list_is_named() -> None:
    from mmplug_text.bert import _layers

    with pytest.raises(ComponentError, match=r"can't find the transformer layers of Linear"):
        _layers(torch.nn.Linear(2, 2), "bert (test)")
