"""Models built from scratch: size presets and WordPiece vocabularies trained on the fly.

A vocabulary is trained with ``tokenizers`` the way BERT's was: lowercasing BERT normalizer,
BERT pre-tokenizer (whitespace and punctuation), WordPiece with ``##`` continuations, and a
post-processor that wraps each text in ``[CLS] ... [SEP]``. The special tokens come first, so
their ids are fixed whatever the training texts: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2,
``[SEP]`` 3, ``[MASK]`` 4.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import WordPieceTrainer
from transformers import BertConfig, PreTrainedTokenizerFast

from mmplug_text import SIZES

#: Special tokens, in id order.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID = 0

#: The file a trained tokenizer is saved to (``tokenizers``' own JSON format).
TOKENIZER_FILE = "tokenizer.json"

#: BERT's own position table; a longer ``max_length`` gets a longer one.
_DEFAULT_POSITIONS = 512


def preset_config(size: str, *, vocab_size: int, max_length: int) -> BertConfig:
    """The BERT config of a size preset (Turc et al. 2019).

    Heads of 64 dimensions and a feed-forward 4x the hidden size, as in the paper.

    Args:
        size: a key of :data:`mmplug_text.SIZES` (``bert-tiny`` ... ``bert-base``).
        vocab_size: rows of the embedding matrix (the vocabulary ``fit`` will train).
        max_length: the longest input, in tokens; the position table covers it.
    """
    layers, hidden = SIZES[size]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(_DEFAULT_POSITIONS, max_length),
        pad_token_id=PAD_ID,
    )


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a lowercasing WordPiece tokenizer of at most ``vocab_size`` tokens.

    The same texts give the same vocabulary, ids included (see :func:`_alphabet` for how).

    Args:
        texts: the training texts.
        vocab_size: the most tokens the vocabulary may hold, special tokens included (fewer
            when the texts don't have that many distinct pieces).

    Raises:
        ValueError: the trained vocabulary came out larger than ``vocab_size`` (it would
            index past the embedding matrix).
    """
    texts = list(texts)
    tokenizer = _untrained(models.WordPiece(unk_token="[UNK]"))
    # Every character of the alphabet also gets a "##" twin, and the trainer keeps the whole
    # alphabet even past vocab_size: bounding the alphabet is what bounds the vocabulary
    # (characters left out become [UNK]). 1000 is the limit BERT's own recipe used.
    limit_alphabet = max(1, min(1000, (vocab_size - len(SPECIAL_TOKENS)) // 2))
    alphabet, continuing = _alphabet(tokenizer, texts, limit_alphabet)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS, *(f"##{char}" for char in continuing)],
        initial_alphabet=alphabet,
        limit_alphabet=limit_alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # The "##" twins were declared as special tokens only to fix their ids: rebuild the
    # tokenizer from the vocabulary so that they are ordinary pieces.
    tokenizer = _untrained(models.WordPiece(tokenizer.get_vocab(), unk_token="[UNK]"))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    size = tokenizer.get_vocab_size()
    if size > vocab_size:
        raise ValueError(f"the trained vocabulary has {size} tokens, more than {vocab_size}")
    cls, sep = (_id(tokenizer, token) for token in ("[CLS]", "[SEP]"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tokenizer


def _untrained(model: models.WordPiece) -> Tokenizer:
    """BERT's normalizer, pre-tokenizer and decoder around ``model``."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _alphabet(tokenizer: Tokenizer, texts: list[str], limit: int) -> tuple[list[str], list[str]]:
    """The ``limit`` most frequent characters of the texts' words, and those of them that
    occur inside a word (after its first character), each sorted.

    ``tokenizers``' WordPiece trainer numbers each such character's ``##`` twin when it first
    meets it while iterating a hash map, so the ids, and with them how count ties between
    merges are broken, change from run to run (huggingface/tokenizers#1794). Declaring exactly
    those twins up front, in this order, fixes them; the upstream fix (PR #2066) sorts them
    the same way inside the trainer.
    """
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    assert normalizer is not None and pre_tokenizer is not None
    counts: Counter[str] = Counter()
    inside: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts.update(word)
            inside.update(word[1:])
    alphabet = sorted(sorted(counts, key=lambda char: (-counts[char], char))[:limit])
    return alphabet, [char for char in alphabet if char in inside]


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A trained ``tokenizers.Tokenizer`` as a transformers fast tokenizer (batch padding)."""
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    """Write ``tokenizer`` to ``directory / tokenizer.json``."""
    tokenizer.save(str(directory / TOKENIZER_FILE))


def load_tokenizer(directory: Path) -> Tokenizer:
    """Read the tokenizer :func:`save_tokenizer` wrote into ``directory``.

    Raises:
        FileNotFoundError: ``directory`` has no ``tokenizer.json``.
    """
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained tokenizer in {directory}: {TOKENIZER_FILE} is missing")
    return Tokenizer.from_file(str(path))


def _id(tokenizer: Tokenizer, token: str) -> int:
    index = tokenizer.token_to_id(token)
    if index is None:  # the trainer always keeps special tokens; this would be a bug
        raise RuntimeError(f"special token {token} is missing from the trained vocabulary")
    return index
