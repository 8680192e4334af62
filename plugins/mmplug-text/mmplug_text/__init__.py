"""mmplug-text: the ``text`` modality and BERT-family encoders.

This is the entry-point module (``[project.entry-points.mmplug] text = "mmplug_text"``), so it
holds only hookimpls and params models and stays cheap to import: no torch, transformers or
tokenizers. The factories are ``"module:attr"`` strings, imported when a model is built:

- :mod:`mmplug_text.modality`: the loader (an inline ``str``);
- :mod:`mmplug_text.bert`: the ``bert`` encoder (any checkpoint ``AutoModel`` loads as an
  encoder: BERT, RoBERTa, DistilBERT, ELECTRA, ...);
- :mod:`mmplug_text.vocab`: size presets and WordPiece training for models built from scratch.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from mmplug import Params, RegisterFn, hookimpl

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for

#: The default checkpoint of the ``bert`` encoder.
DEFAULT_PRETRAINED = "bert-base-uncased"

#: Size presets of Turc et al. 2019 ("Well-Read Students Learn Better"): (layers, hidden size).
SIZES: dict[str, tuple[int, int]] = {
    "bert-tiny": (2, 128),
    "bert-mini": (4, 256),
    "bert-small": (4, 512),
    "bert-medium": (8, 512),
    "bert-base": (12, 768),
}

Size = Literal["bert-tiny", "bert-mini", "bert-small", "bert-medium", "bert-base"]
Pooling = Literal["mean", "cls", "pooler"]


#: The longest text read, in characters, by default: a book chapter, far past any
#: tokenizer's max_length, and short of a whole file pasted into one cell by mistake.
DEFAULT_MAX_CHARACTERS = 100_000


class TextModalityParams(Params):
    """Parameters of the ``text`` modality."""

    max_characters: int = Field(
        default=DEFAULT_MAX_CHARACTERS,
        ge=1,
        description=(
            "Longer texts are refused before tokenization (a row's DataError): tokenizing "
            "megabytes to keep max_length tokens costs time and memory for nothing."
        ),
    )


class BertParams(Params):
    """Parameters of the ``bert`` encoder."""

    pretrained: str | None = Field(
        default=DEFAULT_PRETRAINED,
        description=(
            "A Hugging Face hub id (read from the local cache when HF_HUB_OFFLINE is set) or a "
            "local directory written by save_pretrained (model and tokenizer). With "
            "from_scratch: true only its config (and tokenizer, if any) is used. Null with size."
        ),
    )
    from_scratch: bool = Field(
        default=False,
        description=(
            "Random initialization instead of the pretrained weights: the architecture from "
            "pretrained's config, or from size. Without a tokenizer, fit trains a WordPiece "
            "vocabulary on the training texts."
        ),
    )
    size: Size | None = Field(
        default=None,
        description=(
            "A size preset built from scratch (Turc et al. 2019): bert-tiny 2x128, bert-mini "
            "4x256, bert-small 4x512, bert-medium 8x512, bert-base 12x768 (layers x hidden). "
            "Implies from_scratch; no checkpoint is read and fit trains the vocabulary."
        ),
    )
    vocab_size: int = Field(
        default=8000,
        ge=16,
        description=(
            "Size of the WordPiece vocabulary fit trains (and of the embedding matrix) when "
            "there is no tokenizer to use; ignored otherwise."
        ),
    )
    # mean by default: it is the better sentence vector when the transformer is frozen or
    # barely tuned (Reimers & Gurevych 2019), and as good as cls once fine-tuned.
    pooling: Pooling = Field(
        default="mean",
        description=(
            "pooled is the mean over the real tokens (mean; padding excluded), the first "
            "([CLS]) token's state (cls), or the model's pooler output (pooler: tanh layer on "
            "[CLS], BERT-style models only)."
        ),
    )
    max_length: int = Field(
        default=128,
        ge=2,
        description=(
            "Texts are truncated to this many tokens, [CLS] and [SEP] included; batches are "
            "padded to their longest text, not to this."
        ),
    )
    freeze: bool = Field(
        default=False,
        description=(
            "No gradients for the whole transformer, which stays in eval mode (no dropout) "
            "even while the model trains."
        ),
    )
    trainable_layers: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Train only the top N transformer layers (and the pooler with pooling: pooler); the "
            "embeddings and lower layers are frozen. Null trains everything."
        ),
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        # A validated config is dumped with every field written out and validated again when a
        # saved model is loaded, so the normalized form (size -> from_scratch: true and
        # pretrained: null) must pass this validator unchanged.
        if self.size is not None:
            if "from_scratch" in self.model_fields_set and not self.from_scratch:
                raise ValueError(
                    f"size: {self.size} builds a model from scratch; drop from_scratch: false"
                )
            if "pretrained" in self.model_fields_set and self.pretrained is not None:
                raise ValueError(
                    f"size: {self.size} reads no checkpoint; drop pretrained: {self.pretrained} "
                    "(or drop size and use from_scratch: true to take the checkpoint's config)"
                )
            self.from_scratch = True
            self.pretrained = None
        elif self.pretrained is None:
            raise ValueError("pretrained: null needs a size preset (e.g. size: bert-tiny)")
        if self.freeze and self.trainable_layers is not None:
            raise ValueError(
                "give either freeze: true (freeze everything) or trainable_layers: N "
                "(freeze all but the top N layers), not both"
            )
        return self


@hookimpl
def register_modalities(register: RegisterFn) -> None:
    register(
        "text",
        "mmplug_text.modality:TextModality",
        summary="A string, inline in the manifest (empty is a valid text)",
        params=TextModalityParams,
    )


@hookimpl
def register_encoders(register: RegisterFn) -> None:
    register(
        "bert",
        "mmplug_text.bert:BertEncoder",
        params=BertParams,
        modality="text",
        summary=(
            "BERT-family transformer (transformers AutoModel): pooled cls/mean/pooler, "
            "tokens T x hidden"
        ),
    )
