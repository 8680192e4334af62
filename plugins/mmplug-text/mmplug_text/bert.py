"""The ``bert`` encoder: any BERT-family checkpoint that ``transformers`` loads as an encoder.

``AutoModel`` and ``AutoTokenizer`` do the loading, so BERT, RoBERTa, DistilBERT, ELECTRA and
the like all work. Shapes: ``n`` texts, ``T`` tokens of the longest text in the batch (at most
``max_length``), ``H`` the model's hidden size (the encoder's ``output_dim``).

Checkpoints come from a local directory (``save_pretrained``) or the hub by id, found by
:mod:`mmplug_text.hub` (offline mode, the cache, and what to do when neither has them).
Tokenization runs in a :class:`TextPreprocessor`, which data-loader workers get instead of
the encoder and its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mmplug import ComponentError, DataError, Encoder, EncoderOutput, brief
from mmplug_text import DEFAULT_PRETRAINED, SIZES
from mmplug_text import vocab as vocab_module
from mmplug_text.hub import checkpoint, from_hub, is_empty, tokenizer_if_any

#: Where the transformer layers live, per architecture family: BERT, RoBERTa, ELECTRA and most
#: others use ``encoder.layer``; DistilBERT ``transformer.layer``.
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")

#: A tokenizer's ``model_max_length`` when the checkpoint doesn't set one (transformers uses a
#: huge sentinel); anything above this says nothing about the model.
_NO_LIMIT = 1_000_000


class BertEncoder(Encoder):
    """A BERT-family transformer over texts.

    ``pooled`` ``[n, H]`` is the masked mean of the last hidden states (``mean``), the first
    token's state (``cls``) or the model's pooler output (``pooler``); ``tokens`` ``[n, T, H]``
    and ``mask`` ``[n, T]`` (True for real tokens, [CLS] and [SEP] included) are always given,
    for fusions that attend over tokens.

    Args:
        pretrained: a hub id or a local directory written by ``save_pretrained``. Not read when
            ``size`` is given.
        from_scratch: random weights; the architecture comes from ``pretrained``'s config, or
            from ``size``.
        size: a preset architecture (``bert-tiny`` ... ``bert-base``); implies ``from_scratch``.
        vocab_size: the vocabulary :meth:`fit` trains (and the embedding rows) when there is no
            tokenizer: with ``size``, or a from-scratch checkpoint without tokenizer files.
        pooling: ``mean``, ``cls`` or ``pooler``.
        max_length: texts are truncated to this many tokens, special tokens included.
        freeze: no gradients anywhere; the transformer stays in eval mode (no dropout).
        trainable_layers: train only the top N layers (and the pooler when ``pooling`` is
            ``pooler``); None trains everything.

    Raises:
        ComponentError: the checkpoint can't be loaded (the message says what to do), or the
            options don't fit the architecture (no pooler, too few layers, ``max_length`` past
            the position table).
    """

    modality = "text"
    deterministic_preprocess = True  # tokenization is the same in training: frozen, cacheable

    def __init__(
        self,
        pretrained: str | None = DEFAULT_PRETRAINED,
        from_scratch: bool = False,
        size: str | None = None,
        vocab_size: int = 8000,
        pooling: str = "mean",
        max_length: int = 128,
        freeze: bool = False,
        trainable_layers: int | None = None,
    ):
        super().__init__()
        # The params model checks all this for configs; these guard direct Python callers.
        if pooling not in ("mean", "cls", "pooler"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'pooler', not {pooling!r}")
        if size is not None and size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        if size is None and pretrained is None:
            raise ValueError("give pretrained (a hub id or a directory) or a size preset")
        if freeze and trainable_layers is not None:
            raise ValueError("give either freeze or trainable_layers, not both")
        if trainable_layers is not None and trainable_layers < 0:
            raise ValueError(f"trainable_layers must be >= 0, got {trainable_layers}")

        self.pooling = pooling
        self.max_length = max_length
        self.freeze = freeze
        self.vocab_size = vocab_size
        self._trained: Tokenizer | None = None  # the vocabulary fit trained, if any
        # One object for the encoder's whole life: fit gives it the trained tokenizer, so a
        # pipeline made before fitting tokenizes with it too.
        self._preprocessor = TextPreprocessor(None, max_length, "bert")

        self.model: PreTrainedModel
        if size is not None:
            config: PretrainedConfig = vocab_module.preset_config(
                size, vocab_size=vocab_size, max_length=max_length
            )
            self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
            self._what = f"bert (size {size}, from scratch)"
        else:
            assert pretrained is not None  # checked above
            source = checkpoint(pretrained)
            if from_scratch:
                config = from_hub(AutoConfig.from_pretrained, source, "config")
                self.tokenizer = tokenizer_if_any(source)
                if self.tokenizer is None:
                    # Sized now, so that a saved model's weights fit the architecture that
                    # load_model rebuilds before the trained vocabulary is restored.
                    config.vocab_size = vocab_size
                    config.pad_token_id = vocab_module.PAD_ID
                self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
                self._what = f"bert ({source!r} config, from scratch)"
            else:
                self.tokenizer = from_hub(AutoTokenizer.from_pretrained, source, "tokenizer")
                if is_empty(self.tokenizer):
                    raise ComponentError(
                        f"checkpoint {source!r} has no tokenizer files (tokenizer.json, vocab.txt"
                        ", ...); save its tokenizer there with tokenizer.save_pretrained(DIR), "
                        "or use from_scratch: true to train a vocabulary"
                    )
                self.model = from_hub(AutoModel.from_pretrained, source, "weights")
                self._what = f"bert ({source!r})"
        self._preprocessor.what = self._what
        # A model built without a tokenizer learns its vocabulary in fit.
        self.trains_vocabulary = self.tokenizer is None
        self.output_dim = int(self.model.config.hidden_size)
        self._check_max_length()
        self._set_trainable(trainable_layers)
        # from_pretrained returns the transformer in eval mode while this module starts in
        # training mode, as every nn.Module does: line them up (a frozen one stays in eval).
        self.train()

    # -- Encoder ----------------------------------------------------------------------------

    def fit(self, raws: list[Any]) -> None:
        """Train the WordPiece vocabulary on the training texts, if this model needs one.

        Does nothing when the checkpoint brings its tokenizer. Fitting again replaces the
        vocabulary (and so the meaning of every trained embedding row).

        Args:
            raws: the training texts (``str``).
        """
        if not self.trains_vocabulary:
            return
        self._use_trained(vocab_module.train_wordpiece(_texts(raws), self.vocab_size))

    def save_fitted(self, directory: Path) -> None:
        """Write the trained tokenizer as ``tokenizer.json``; nothing for a checkpoint's own."""
        if self._trained is not None:
            vocab_module.save_tokenizer(self._trained, directory)

    def load_fitted(self, directory: Path) -> None:
        """Restore the tokenizer :meth:`save_fitted` wrote."""
        self._use_trained(vocab_module.load_tokenizer(directory))

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Tokenize a batch (see :class:`TextPreprocessor`)."""
        return self.preprocessor()(raws, train=train)

    def preprocessor(self) -> TextPreprocessor:
        """The tokenizer and ``max_length``, without the transformer's weights; the same
        object before and after :meth:`fit`, which gives it the trained tokenizer."""
        return self._preprocessor

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The checkpoint's tokenizer, or the one fit trained; None before that."""
        return self._preprocessor.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: PreTrainedTokenizerBase | None) -> None:
        self._preprocessor.tokenizer = tokenizer

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        """Encode a preprocessed batch.

        Args:
            inputs: ``input_ids`` and ``attention_mask``, both ``[n, T]``.

        Returns:
            ``pooled`` ``[n, H]``, ``tokens`` ``[n, T, H]`` (the last hidden states) and
            ``mask`` ``[n, T]`` bool.
        """
        attention_mask = inputs["attention_mask"]
        out = self.model(input_ids=inputs["input_ids"], attention_mask=attention_mask)
        tokens: Tensor = out.last_hidden_state
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            weights = attention_mask.unsqueeze(-1).to(tokens.dtype)  # [n, T, 1]
            # Every row has at least [CLS] and [SEP]; the clamp only guards a caller's own mask.
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=attention_mask.bool())

    # -- helpers ----------------------------------------------------------------------------

    def _use_trained(self, trained: Tokenizer) -> None:
        self._trained = trained
        self.tokenizer = vocab_module.wrap(trained)

    def _check_max_length(self) -> None:
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < _NO_LIMIT:
            limit = min(limit, model_max) if limit else model_max
        if limit and self.max_length > limit:
            raise ComponentError(
                f"max_length {self.max_length} is longer than {self._what} can take "
                f"({limit} positions); use max_length: {limit} or less"
            )

    def _set_trainable(self, trainable_layers: int | None) -> None:
        """Freeze what must not train: everything, all but the top layers, an unused pooler."""
        pooler = getattr(self.model, "pooler", None)
        if self.pooling == "pooler" and not isinstance(pooler, nn.Module):
            raise ComponentError(
                f"{self._what}: {type(self.model).__name__} has no pooler (DistilBERT and "
                "some checkpoints don't); use pooling: cls or mean"
            )
        if self.freeze:
            self.freeze_modules()  # the whole encoder, in eval mode: its outputs can be cached
            return
        if trainable_layers is not None:
            layers = _layers(self.model, self._what)
            if trainable_layers > len(layers):
                raise ComponentError(
                    f"trainable_layers {trainable_layers} is more than the {len(layers)} layers "
                    f"of {self._what}"
                )
            self.model.requires_grad_(False)
            for layer in layers[len(layers) - trainable_layers :]:
                layer.requires_grad_(True)
            if self.pooling == "pooler" and isinstance(pooler, nn.Module):
                pooler.requires_grad_(True)
        if self.pooling != "pooler" and isinstance(pooler, nn.Module):
            # Its output is never used: parameters without gradients would only confuse
            # optimizers (weight decay) and DistributedDataParallel.
            pooler.requires_grad_(False)


class TextPreprocessor:
    """Tokenizes a batch of texts with a fast tokenizer, in one call.

    Args:
        tokenizer: the checkpoint's or the trained one; None until :meth:`BertEncoder.fit`
            has trained a vocabulary.
        max_length: texts are truncated to this many tokens, special tokens included.
        what: the encoder, as errors name it.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase | None, max_length: int, what: str
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.what = what

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Tokenize.

        Args:
            raws: ``n`` texts; an empty string is a valid text (``[CLS] [SEP]``).
            train: unused; tokenization is the same in training.

        Returns:
            ``input_ids`` ``[n, T]`` (long) and ``attention_mask`` ``[n, T]`` (1 for real
            tokens), padded to the longest text of the batch and truncated to ``max_length``.

        Raises:
            ComponentError: the model needs a vocabulary and fit has not run.
            DataError: a value is not a string.
        """
        if self.tokenizer is None:
            raise ComponentError(
                f"{self.what} has no vocabulary yet: call fit on the training texts "
                "(model.fit_encoders(samples)) before preprocessing, or load a saved model"
            )
        # token_type_ids are left out: for a single text they are all zeros, which is what
        # the models use when none are given (and DistilBERT takes none at all).
        encoded = self.tokenizer(
            _texts(raws),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
        }


def _texts(raws: list[Any]) -> list[str]:
    for index, raw in enumerate(raws):
        if not isinstance(raw, str):
            raise DataError(
                f"text {index} of the batch is {type(raw).__name__}: {brief(raw)}, not a string"
            )
    return list(raws)


def _layers(model: nn.Module, what: str) -> nn.ModuleList:
    """The list of transformer layers, bottom first."""
    for path in _LAYER_PATHS:
        found: Any = model
        for attr in path.split("."):
            found = getattr(found, attr, None)
        if isinstance(found, nn.ModuleList):
            return found
    looked = ", ".join(f"model.{path}" for path in _LAYER_PATHS)
    raise ComponentError(
        f"{what}: can't find the transformer layers of {type(model).__name__} (looked for "
        f"{looked}); trainable_layers can't be used with it, freeze or train everything"
    )
