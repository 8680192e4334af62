"""What batching the text encoder's way saves: one fast-tokenizer call per batch, and padding
to the batch's longest text instead of to ``max_length``.

Builds the ``bert`` encoder of mmplug-text from a size preset (no download), fits its WordPiece
vocabulary on generated captions, then times, side by side in one run:

- tokenizing a batch in one call vs one call per text;
- an eval forward pass on the batch padded to its longest text (what ``preprocess`` does) vs
  padded to ``max_length``.

Captions are short (5-15 words) as in most multimodal datasets, so ``max_length`` padding is
mostly waste. Usage::

    python benchmarks/text_batching.py [--size bert-mini] [--batch 64] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random

import torch
from timing import timed

WORDS = "a the red blue small large dog cat car house runs sits near under over".split()  # noqa: SIM905


def captions(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(5, 15))) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="bert-mini", help="a size preset of mmplug-text")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from mmplug_text.bert import BertEncoder

    torch.manual_seed(0)
    encoder = BertEncoder(size=args.size, vocab_size=2000, max_length=args.max_length).eval()
    texts = captions(args.batch)
    encoder.fit(captions(2000, seed=1))
    tokenizer = encoder.tokenizer
    assert tokenizer is not None
    common = {"truncation": True, "max_length": args.max_length, "return_tensors": "pt"}

    batched = timed(lambda: encoder.preprocess(texts), args.repeat)
    one_by_one = timed(lambda: [encoder.preprocess([t]) for t in texts], args.repeat)

    longest = encoder.preprocess(texts)
    padded = tokenizer(texts, padding="max_length", **common)
    full = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
    with torch.no_grad():
        torch.testing.assert_close(encoder(longest).pooled, encoder(full).pooled, atol=1e-4, rtol=0)
        short = timed(lambda: encoder(longest), args.repeat)
        long = timed(lambda: encoder(full), args.repeat)

    tokens = longest["input_ids"].shape[1]
    rows = [
        ("tokenize, one call per batch", batched, ""),
        ("tokenize, one call per text", one_by_one, f"{one_by_one / batched:.1f}x the batch call"),
        (f"forward, padded to longest ({tokens})", short, ""),
        (f"forward, padded to max_length ({args.max_length})", long, f"{long / short:.1f}x"),
    ]
    print(f"bert {args.size}, a batch of {args.batch} captions (pooled outputs equal)")
    for what, seconds, ratio in rows:
        print(f"  {what:<40} {seconds * 1e3:9.2f} ms  {ratio}")


if __name__ == "__main__":
    main()
