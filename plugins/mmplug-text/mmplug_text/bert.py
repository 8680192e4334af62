"""The ``bert`` encoder: any BERT-family checkpoint that ``transformers`` loads as an encoder.

``AutoModel`` and ``AutoTokenizer`` do the loading, so BERT, RoBERTa, DistilBERT, ELECTRA and
the like all work. Shapes: ``n`` texts, ``T`` tokens of the longest text in the batch (at most
``max_length``), ``H`` the model's hidden size (the encoder's ``output_dim``).

Checkpoints come from a local directory (``save_pretrained``) or the hub by id. Loading
honours ``HF_HUB_OFFLINE`` (read when the encoder is built, not only when ``huggingface_hub``
was imported) and the local cache; when the files can't be had, the error names the
checkpoint and says how to point ``pretrained`` at a local directory instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mmplug.errors import ComponentError, DataError
from mmplug.interfaces import Encoder, EncoderOutput
from mmplug_text import DEFAULT_PRETRAINED, SIZES
from mmplug_text import vocab as vocab_module

T = TypeVar("T")

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
        self.tokenizer: PreTrainedTokenizerBase | None = None

        self.model: PreTrainedModel
        if size is not None:
            config: PretrainedConfig = vocab_module.preset_config(
                size, vocab_size=vocab_size, max_length=max_length
            )
            self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
            self._what = f"bert (size {size}, from scratch)"
        else:
            assert pretrained is not None  # checked above
            source = _checkpoint(pretrained)
            if from_scratch:
                config = _hub(AutoConfig.from_pretrained, source, "config")
                self.tokenizer = _tokenizer_if_any(source)
                if self.tokenizer is None:
                    # Sized now, so that a saved model's weights fit the architecture that
                    # load_model rebuilds before the trained vocabulary is restored.
                    config.vocab_size = vocab_size
                    config.pad_token_id = vocab_module.PAD_ID
                self.model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
                self._what = f"bert ({source!r} config, from scratch)"
            else:
                self.tokenizer = _hub(AutoTokenizer.from_pretrained, source, "tokenizer")
                if _is_empty(self.tokenizer):
                    raise ComponentError(
                        f"checkpoint {source!r} has no tokenizer files (tokenizer.json, vocab.txt"
                        ", ...); save its tokenizer there with tokenizer.save_pretrained(DIR), "
                        "or use from_scratch: true to train a vocabulary"
                    )
                self.model = _hub(AutoModel.from_pretrained, source, "weights")
                self._what = f"bert ({source!r})"
        # A model built without a tokenizer learns its vocabulary in fit.
        self.trains_vocabulary = self.tokenizer is None
        self.output_dim = int(self.model.config.hidden_size)
        self._check_max_length()
        self._set_trainable(trainable_layers)
        # from_pretrained returns the transformer in eval mode while this module starts in
        # training mode, as every nn.Module does: line them up (a frozen one stays in eval).
        self.train()

    # -- nn.Module ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Self:
        """Set training mode; a frozen transformer stays in eval mode (dropout off)."""
        super().train(mode)
        if self.freeze:
            self.model.eval()  # type: ignore[no-untyped-call]
        return self

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
        """Tokenize a batch with the fast tokenizer, in one call.

        Args:
            raws: ``n`` texts; an empty string is a valid text (``[CLS] [SEP]``).
            train: unused; tokenization is the same in training.

        Returns:
            ``input_ids`` ``[n, T]`` (long) and ``attention_mask`` ``[n, T]`` (1 for real
            tokens), padded to the longest text of the batch and truncated to ``max_length``.

        Raises:
            ComponentError: the model needs a vocabulary and :meth:`fit` has not run.
            DataError: a value is not a string.
        """
        if self.tokenizer is None:
            raise ComponentError(
                f"{self._what} has no vocabulary yet: call fit on the training texts "
                "(model.fit_encoders(samples)) before preprocess, or load a saved model"
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
            self.model.requires_grad_(False)
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


def _texts(raws: list[Any]) -> list[str]:
    for index, raw in enumerate(raws):
        if not isinstance(raw, str):
            raise DataError(
                f"text {index} of the batch is {type(raw).__name__}: {raw!r:.80}, not a string"
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


# -- loading checkpoints --------------------------------------------------------------------


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline() -> bool:
    """Offline mode, from the environment now or from when ``huggingface_hub`` was imported."""
    from huggingface_hub import constants

    from_env = _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")
    return from_env or bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _offline_mode() -> Iterator[bool]:
    """Make huggingface_hub offline for a load when the environment says so; yields whether.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is imported. Passing
    ``local_files_only`` is not enough when the variable was set later (in a notebook, or a
    test): the hub client still contacts the Hub for other things (its user-agent lookup),
    which without network means retries and a long wait. So its flag is set for the load.
    """
    from huggingface_hub import constants

    offline = _offline()
    before = constants.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = before


def _looks_like_path(value: str) -> bool:
    """Whether ``pretrained`` is meant as a folder rather than a hub id (``org/name``)."""
    return (
        value.startswith(("/", "./", "../", "~", "."))
        or "\\" in value
        or value.count("/") > 1
        or Path(value).is_absolute()
    )


def _checkpoint(pretrained: str) -> str:
    """``pretrained`` as transformers should get it: an existing directory, or a hub id.

    Raises:
        ComponentError: it names a file, or a directory that does not exist.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ComponentError(
            f"pretrained {pretrained!r} is a file; give the directory save_pretrained wrote "
            "(config.json, weights and tokenizer files) or a hub id"
        )
    if _looks_like_path(pretrained):
        raise ComponentError(
            f"checkpoint directory not found: {pretrained!r} (looked for {path.absolute()})"
        )
    return pretrained


def _hub(load: Callable[..., T], source: str, what: str) -> T:
    """Call a ``from_pretrained`` loader; a checkpoint that can't be had is a clear error."""
    try:
        with _offline_mode() as offline:
            return load(source, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError) as exc:  # transformers turns hub errors into OSError
        raise _unavailable(source, what, exc) from exc


def _unavailable(source: str, what: str, exc: BaseException) -> ComponentError:
    cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    if Path(source).is_dir():
        return ComponentError(f"can't load the {what} from checkpoint directory {source}: {cause}")
    from huggingface_hub import constants

    why = (
        "HF_HUB_OFFLINE is set, so nothing is downloaded"
        if _offline()
        else "it could not be downloaded (no network, or no such repository)"
    )
    return ComponentError(
        f"can't load the {what} of checkpoint {source!r}: {why}, and it is neither a local "
        f"directory nor in the Hugging Face cache ({constants.HF_HUB_CACHE}). Where there is "
        f"network, download it (`hf download {source}`, then copy the cache), or save it to a "
        f"folder (AutoModel.from_pretrained({source!r}).save_pretrained(DIR), and the same "
        "with AutoTokenizer) and set `pretrained: /path/to/DIR`. "
        f"Cause: {cause}"
    )


def _tokenizer_if_any(source: str) -> PreTrainedTokenizerBase | None:
    """The checkpoint's tokenizer, or None when it has no tokenizer files.

    Raises:
        ComponentError: ``source`` is a directory whose tokenizer files can't be read (a
            directory without any gives an empty tokenizer, not an error): training a new
            vocabulary instead would silently change what the model reads.
    """
    try:
        tokenizer = _hub(AutoTokenizer.from_pretrained, source, "tokenizer")
    except ComponentError:
        if Path(source).is_dir():
            raise
        return None
    return None if _is_empty(tokenizer) else tokenizer


def _is_empty(tokenizer: PreTrainedTokenizerBase) -> bool:
    # transformers 5 builds a tokenizer holding only its special tokens when a checkpoint has
    # no tokenizer files at all, instead of failing: a vocabulary of specials is no tokenizer.
    return len(tokenizer) <= len(tokenizer.all_special_tokens)
