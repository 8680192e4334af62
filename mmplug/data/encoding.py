"""Encoding a manifest: every row through a model's encoders, outside training.

:func:`encode_manifest` does two things a user may want before (or instead of) training:

- pre-fill the feature cache, so that the first epoch of a run with frozen encoders reads
  their outputs instead of computing them (``mmplug encode CONFIG --data train.jsonl``);
- write the pooled embeddings to a safetensors file to take elsewhere: ``<key>`` ``[rows, D]``
  (float32, zeros where absent), ``present_<key>`` bool ``[rows]`` and ``row`` int64
  ``[rows]`` (the manifest's line numbers, as errors name rows).

Rows are preprocessed as for evaluation (``train=False``). The cache names an entry by the
encoder and the value only, so training and evaluation share entries: an encoder qualifies
for the cache only if its preprocessing is deterministic, which is what makes that sound.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmplug.data.pipeline import ManifestDataset, Skipped, make_loader
from mmplug.errors import MmplugError
from mmplug.model.devices import autocast

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from mmplug.data.feature_cache import FeatureCache
    from mmplug.model.multimodal import MultimodalModel

#: ``progress(description, total)`` -> a context giving ``advance(**fields)``, as
#: :meth:`mmplug.training.progress.Reporter.bar` does.
Progress = Callable[[str, int], "AbstractContextManager[Callable[..., None]]"]

ROW = "row"
PRESENT = "present_"


@dataclass
class CacheCounts:
    """One cached key's rows: outputs found in the cache, and computed and written to it."""

    found: int = 0
    written: int = 0


@dataclass
class EncodeResult:
    """What :func:`encode_manifest` did.

    Attributes:
        rows: the rows encoded (skipped ones left out).
        skipped: the rows that could not be read (``data.on_error: skip``).
        cached: per cached key, how many of its values the cache had and how many were added.
        shapes: per tensor written to ``out``, its shape; empty without ``out``.
    """

    rows: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    cached: dict[str, CacheCounts] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def encode_manifest(
    model: MultimodalModel,
    dataset: ManifestDataset,
    *,
    cache: FeatureCache | None = None,
    out: str | Path | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> EncodeResult:
    """Pass every row of ``dataset`` through the model's encoders (eval mode, no gradients).

    Args:
        model: its encoders run; the fusion and the head don't.
        dataset: the rows; its keys are the encoders that run (a key it doesn't load is
            absent in every row). Its ``on_error`` decides about rows that can't be read.
        cache: the feature cache (:func:`~mmplug.data.feature_cache.plan_feature_cache`):
            its keys' outputs are read from it where there, and written to it otherwise.
        out: write the pooled embeddings here (see the module's docstring).
        device: where the encoders run (default: where the model is).
        precision: ``train.precision`` (autocast), which the cache's entries depend on.
        batch_size: rows per forward pass.
        num_workers: data-loader workers.
        progress: draws a bar over the batches (e.g. ``Reporter().bar``).

    Returns:
        The rows encoded and skipped, and what the cache had and gained.

    Raises:
        DataError: a row can't be read and ``dataset.on_error`` is ``raise`` (naming it).
        MmplugError: a modality key whose tensor name in ``out`` would clash (``row``,
            ``present_*``).
    """
    keys = model.keys
    if out is not None:
        check_out(out)
        clashing = [key for key in keys if key == ROW or key.startswith(PRESENT)]
        if clashing:
            raise MmplugError(
                f"modality key {clashing[0]!r} can't be written to {out}: its tensor would be "
                f"confused with {ROW!r} or the {PRESENT}<key> masks; rename the key"
            )
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    result = EncodeResult(
        cached={key: CacheCounts() for key in sorted(cache.keys)} if cache else {}
    )
    pooled: dict[str, list[Tensor]] = {key: [] for key in keys}
    present: dict[str, list[Tensor]] = {key: [] for key in keys}
    rows: list[int] = []
    lines = dataset.manifest.lines
    loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)
    bar = progress or _no_bar
    with (
        _encoding(model, dataset, cache),
        bar(f"encoding {dataset.manifest.path}", len(loader)) as advance,
    ):
        for loaded in loader:
            loaded.raise_fatal()
            result.skipped += loaded.skipped
            if loaded.batch is None:
                advance()
                continue
            for key, known in loaded.batch.encoded.items():
                counts = result.cached[key]
                counts.found += known.found
                counts.written += sum(entry is not None for entry in known.entries)
            batch = loaded.batch.to(device)
            with autocast(device, precision):
                features = model.encode(batch)
            rows += [lines[index] for index in loaded.indices]
            if out is not None:
                for key in keys:
                    pooled[key].append(features[key].pooled.detach().float().cpu())
                    present[key].append(batch.present[key].cpu())
            advance()
    result.rows = len(rows)
    if cache is not None:
        cache.evict_if_grown()  # as training does after each epoch: the limit holds
    if out is not None:
        tensors = {ROW: torch.tensor(rows, dtype=torch.int64)}
        for key, encoder in model.encoder_items():
            tensors[key] = _cat(pooled[key], (0, encoder.output_dim), torch.float32)
            tensors[PRESENT + key] = _cat(present[key], (0,), torch.bool)
        _save(tensors, Path(out), {"manifest": str(dataset.manifest.path)})
        result.shapes = {name: tuple(tensor.shape) for name, tensor in sorted(tensors.items())}
    return result


@contextlib.contextmanager
def _encoding(
    model: MultimodalModel, dataset: ManifestDataset, cache: FeatureCache | None
) -> Iterator[None]:
    """The model in eval mode without gradients and the dataset reading ``cache``; both as
    they were afterwards."""
    was_training, was_cache = model.training, dataset.features
    model.eval()
    dataset.features = cache
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        dataset.features = was_cache


@contextlib.contextmanager
def _no_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda **fields: None


def _cat(parts: Sequence[Tensor], empty: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.cat(list(parts)) if parts else torch.zeros(empty, dtype=dtype)


def check_out(out: str | Path) -> None:
    """Refuse an ``--out`` that can't be written before any encoding is done: a folder, or
    a file in a folder that doesn't exist or isn't writable.

    Raises:
        MmplugError: naming the path and why.
    """
    path = Path(out)
    if path.is_dir():
        raise MmplugError(f"--out {out} is a folder; give a file name (emb.safetensors)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MmplugError(f"--out {out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MmplugError(f"--out {out}: the folder {parent} is not writable")


def _save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, Any]) -> None:
    """Write ``tensors`` to ``path`` whole or not at all."""
    from safetensors.torch import save

    from mmplug.files import write_bytes

    data = save({name: t.contiguous() for name, t in tensors.items()}, metadata=metadata)
    try:
        write_bytes(path, data)
    except OSError as exc:
        raise MmplugError(f"can't write the embeddings to {path}: {exc.strerror or exc}") from exc
