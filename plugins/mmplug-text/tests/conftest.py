"""Fixtures: a tiny BERT checkpoint written by the test session, and plugin hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mmplug
from mmplug.model.interfaces import EncoderOutput, Fusion
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import load_plugins
from mmplug_text import __version__

WORDS = [
    *("the", "a", "an", "is", "was", "cat", "cats", "dog", "dogs", "sat", "ran", "on"),
    *("under", "mat", "sofa", "big", "small", "red", "blue", "quick", "brown", "fox"),
    *("jumps", "over", "lazy", "very", "long", "text", "about", "and", "with"),
]
#: BERT's layout: special tokens first, then whole words, characters and "##" pieces.
VOCAB = list(
    dict.fromkeys(  # a word may also be a letter ("a"): keep its first id only
        [
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            *".,!?",
            *WORDS,
            *"abcdefghijklmnopqrstuvwxyz",
            *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
        ]
    )
)


def tiny_config(**overrides: Any) -> Any:
    from transformers import BertConfig

    options: dict[str, Any] = {
        "vocab_size": len(VOCAB),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    return BertConfig(**{**options, **overrides})


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with its tokenizer, as ``save_pretrained`` writes them."""
    from transformers import BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_config()).save_pretrained(directory)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, model_max_length=128)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def config_only_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder with a config and weights but no tokenizer files."""
    from transformers import BertModel

    directory = tmp_path_factory.mktemp("config-only-bert")
    BertModel(tiny_config()).save_pretrained(directory)
    return directory


class FirstFusion(Fusion):
    """The one key's pooled features through a linear layer: enough to carry a head."""

    def __init__(self, input_dims: dict[str, int], dim: int = 4):
        super().__init__()
        (self.key,) = input_dims
        self.output_dim = dim
        self.project = nn.Linear(input_dims[self.key], dim)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        return self.project(features[self.key].pooled)


class _FusionPlugin:
    @mmplug.hookimpl
    def register_fusions(self, register: Any) -> None:
        register("first", FirstFusion)


def make_text_host() -> PluginHost:
    """Core, this plugin (as ``mmplug-text``) and a one-key fusion; no entry points."""
    host = load_plugins(entry_points=False)
    record = host.add_module(
        "mmplug_text", name="text", distribution="mmplug-text", version=__version__
    )
    assert record.status == "loaded", record.error
    host.add(_FusionPlugin(), name="first", distribution="test-fusion", version="1.0")
    return host


@pytest.fixture
def text_host() -> PluginHost:
    return make_text_host()
