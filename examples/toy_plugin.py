"""A whole mmplug plugin in one file: two modalities, two encoders and a fusion.

It shows every part of the plugin contract with components small enough to read at once:

- modality ``numbers``: a vector given inline (``[0.1, 2.0]`` or ``"0.1,2.0"``), of a
  length its ``size`` param may fix;
- modality ``word``: a short string given inline;
- encoder ``mlp`` (numbers): a two-layer perceptron;
- encoder ``char-bag`` (word): hashed character embeddings, one token per character;
- fusion ``mean``: masked mean of per-modality projections, a learned vector when nothing is
  present.

An installed plugin would keep the hookimpls and params models in its entry-point module and
point at the torch classes with ``"package.module:Class"`` strings, so that listing plugins
never imports torch; this single-file example imports torch directly for brevity.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

import mmplug
from mmplug import DataError, Encoder, EncoderOutput, Fusion, Modality, brief


class NumbersParams(mmplug.Params):
    size: int | None = Field(
        default=None, ge=1, description="The vector's length; null takes any length."
    )


class NumbersModality(Modality):
    """A vector of floats, inline in the manifest."""

    name = "numbers"

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def load(self, value: Any, *, root: str | Path | None = None) -> Tensor:
        items = value.split(",") if isinstance(value, str) else value
        try:
            vector = torch.tensor([float(v) for v in items], dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"numbers: can't read {brief(value)} as a list of numbers") from exc
        if self.size is not None and vector.shape != (self.size,):
            raise DataError(f"numbers: expected {self.size} numbers, got {len(vector)}")
        return vector


class WordModality(Modality):
    """A short string, inline in the manifest."""

    name = "word"

    def load(self, value: Any, *, root: str | Path | None = None) -> str:
        if not isinstance(value, str):
            raise DataError(f"word: expected a string, got {brief(value)}")
        return value


class MLPParams(mmplug.Params):
    input_size: int = Field(ge=1, description="Length of each vector.")
    dim: int = Field(default=32, ge=1, description="Output size.")


class MLPEncoder(Encoder):
    """Two linear layers with a GELU: ``[n, input_size]`` -> pooled ``[n, dim]``."""

    modality = "numbers"
    deterministic_preprocess = True  # no augmentation: a frozen one could be feature-cached

    def __init__(self, input_size: int, dim: int = 32):
        super().__init__()
        self.input_size = input_size
        self.output_dim = dim
        self.net = nn.Sequential(nn.Linear(input_size, dim), nn.GELU(), nn.Linear(dim, dim))

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        for raw in raws:
            if raw.shape != (self.input_size,):
                raise DataError(f"mlp: expected {self.input_size} numbers, got {raw.tolist()}")
        return {"values": torch.stack(raws)}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values = inputs["values"].to(self.net[0].weight.dtype)  # follows model.to(float64)
        return EncoderOutput(pooled=self.net(values))


class CharBagParams(mmplug.Params):
    buckets: int = Field(default=512, ge=2, description="Hash buckets for characters.")
    dim: int = Field(default=32, ge=1, description="Embedding size.")
    max_length: int = Field(default=32, ge=1, description="Characters kept per word.")


class CharBagEncoder(Encoder):
    """Hashed character embeddings; pooled is their masked mean, tokens are the characters."""

    modality = "word"
    deterministic_preprocess = True

    def __init__(self, buckets: int = 512, dim: int = 32, max_length: int = 32):
        super().__init__()
        self.buckets = buckets
        self.max_length = max_length
        self.output_dim = dim
        self.embed = nn.Embedding(buckets, dim)

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        # Padding to the longest word in the batch; an empty word keeps one masked slot.
        ids = [[zlib.crc32(c.encode()) % self.buckets for c in w[: self.max_length]] for w in raws]
        length = max(1, *(len(i) for i in ids))
        padded = torch.zeros(len(ids), length, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for row, chars in enumerate(ids):
            padded[row, : len(chars)] = torch.tensor(chars, dtype=torch.long)
            mask[row, : len(chars)] = True
        return {"ids": padded, "mask": mask}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        mask = inputs["mask"]
        tokens = self.embed(inputs["ids"]) * mask.unsqueeze(-1)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)


class MeanFusionParams(mmplug.Params):
    dim: int = Field(default=64, ge=1, description="Common size each modality is projected to.")


class MeanFusion(Fusion):
    """Mean of per-modality projections over the present modalities."""

    def __init__(self, input_dims: dict[str, int], dim: int = 64):
        super().__init__()
        self.output_dim = dim
        self.project = nn.ModuleDict({k: nn.Linear(d, dim) for k, d in sorted(input_dims.items())})
        self.nothing = nn.Parameter(torch.zeros(dim))  # the output when no modality is present

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        total = self.nothing.new_zeros(next(iter(present.values())).shape[0], self.output_dim)
        count = torch.zeros_like(total[:, :1])
        for key in sorted(self.project):
            has = present[key].unsqueeze(-1)
            # where(), not multiplication: an absent row must not leak through the bias.
            total = total + torch.where(has, self.project[key](features[key].pooled), 0.0)
            count = count + has.to(count.dtype)
        return torch.where(count > 0, total / count.clamp(min=1), self.nothing)


@mmplug.hookimpl
def register_modalities(register):
    register("numbers", NumbersModality, params=NumbersParams, summary="A vector of floats, inline")
    register("word", WordModality, summary="A short string, inline")


@mmplug.hookimpl
def register_encoders(register):
    register("mlp", MLPEncoder, params=MLPParams, modality="numbers")
    register("char-bag", CharBagEncoder, params=CharBagParams, modality="word")


@mmplug.hookimpl
def register_fusions(register):
    register("mean", MeanFusion, params=MeanFusionParams)
