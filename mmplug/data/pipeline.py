"""The data pipeline: from a manifest row or a Python sample to a :class:`Batch`.

A :class:`Pipeline` holds what the data side needs and nothing of the model's weights: each
modality key's :class:`~mmplug.Modality` (the loader) and its encoder's preprocessor
(:meth:`~mmplug.Encoder.preprocessor`: a tokenizer, transforms, a filter bank). It is the
only path to a batch: training, evaluation and prediction (of a manifest or of one sample)
all go through :meth:`Pipeline.load` and :meth:`Pipeline.collate`.

``DataLoader`` workers (``data.num_workers`` > 0) receive a :class:`ManifestDataset` and the
collate function, which hold the pipeline but not the model: what is pickled for each worker
is kilobytes, not the weights (``benchmarks/worker_payload.py`` prints both). A row that
can't be loaded raises a :class:`DataError` naming the manifest, row, column and value, or,
with ``on_error: skip``, travels with the batch as a :class:`Skipped` record so that the run
can count and list it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from mmplug.data.manifest import Manifest, MissingColumns, columns_in
from mmplug.data.sharding import Ranks, ShardedBatches
from mmplug.errors import ComponentError, DataError, bounded, brief
from mmplug.model.interfaces import EncoderPreprocessor, Modality, Preprocessor
from mmplug.model.multimodal import Batch
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import Task

if TYPE_CHECKING:
    from mmplug.data.feature_cache import FeatureCache
    from mmplug.model.multimodal import MultimodalModel
    from mmplug.plugins.registry import ComponentSpec


class Pipeline:
    """Each modality key's loader and preprocessor: raw values in, a :class:`Batch` out.

    Args:
        modalities: key -> the :class:`Modality` that loads its values.
        preprocessors: key -> the encoder's preprocessor; the same keys.
        origins: key -> (modality, encoder) as errors name them, e.g. ``("modality 'word'
            from toy-plugin 1.0", "encoder 'char-bag' from toy-plugin 1.0")``; default:
            their classes and modules.
    """

    def __init__(
        self,
        modalities: Mapping[str, Modality],
        preprocessors: Mapping[str, Preprocessor],
        origins: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        if set(modalities) != set(preprocessors):
            raise ValueError(
                f"modalities {sorted(modalities)} and preprocessors {sorted(preprocessors)} "
                "must have the same keys"
            )
        self.keys: list[str] = sorted(modalities)
        self.modalities = {key: modalities[key] for key in self.keys}
        self.preprocessors = {key: preprocessors[key] for key in self.keys}
        self.origins = dict(origins or {})

    @classmethod
    def from_model(cls, model: MultimodalModel) -> Pipeline:
        """The pipeline of ``model``: its modalities and its encoders' preprocessors (which
        follow what the encoders' ``fit`` learns, before or after this is made), named in
        errors by registered name and distribution when the model was built by name."""
        origins = {}
        if model.resolved is not None:
            for key, encoder in model.resolved.encoders.items():
                modality = model.resolved.modalities[key]
                origins[key] = (_origin(modality.spec), _origin(encoder.spec))
        return cls(
            model.modalities,
            {key: encoder.preprocessor() for key, encoder in model.encoder_items()},
            origins,
        )

    def load(
        self,
        values: Mapping[str, Any],
        *,
        root: str | Path | None = None,
        where: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """Load one sample's values (paths, inline values) with each key's modality.

        A missing key or ``None`` stays absent; an object already loaded (a ``PIL.Image``
        from a Python caller) is the modality's to accept.

        Args:
            values: key -> value.
            root: the folder relative paths resolve against.
            where: names a key's value in errors (a manifest names its row and column);
                default ``key 'image'``.

        Raises:
            DataError: a key the model has no encoder for, or a value that can't be loaded.
        """
        self.check_keys(values, "the sample")
        loaded = {}
        for key in self.keys:
            value = values.get(key)
            if value is None:
                continue
            named = where(key) if where is not None else f"key {key!r}"
            origin = self._named(key, 0, self.modalities[key])
            with _as_data_error(named, origin, "load"):
                loaded[key] = self.modalities[key].load(value, root=root)
        return loaded

    def collate(self, samples: Sequence[Mapping[str, Any]], *, train: bool = False) -> Batch:
        """Batch loaded samples (key -> raw object; a missing key or None is absent).

        Each key's preprocessor sees only the samples that have the key, in order, and its
        tensors keep that leading dimension ``n``.

        Args:
            samples: ``B`` samples as :meth:`load` returns them.
            train: preprocess for training (augmentation, random crops).
        """
        for index, sample in enumerate(samples):
            self.check_keys(sample, f"sample {index}")
        inputs: dict[str, dict[str, Tensor]] = {}
        present: dict[str, Tensor] = {}
        for key in self.keys:
            mask = [sample.get(key) is not None for sample in samples]
            present[key] = torch.tensor(mask, dtype=torch.bool)
            raws = [sample[key] for sample, has in zip(samples, mask, strict=True) if has]
            if raws:
                preprocessor = self.preprocessors[key]
                # the default preprocessor is the encoder's own preprocess: name the encoder
                owner = (
                    preprocessor.encoder
                    if isinstance(preprocessor, EncoderPreprocessor)
                    else preprocessor
                )
                origin = self._named(key, 1, owner)
                with _as_data_error(f"key {key!r}", origin, "preprocess"):
                    inputs[key] = preprocessor(raws, train=train)
                _check_rows(inputs[key], len(raws), f"key {key!r}: preprocess of {origin}")
            else:
                inputs[key] = {}
        return Batch(size=len(samples), inputs=inputs, present=present)

    def refused(
        self, samples: Sequence[Mapping[str, Any]], *, train: bool = False
    ) -> list[tuple[int, DataError]]:
        """The samples the preprocessing refuses, by position, with why: each is collated
        alone (a preprocessor's error names no sample of the batch it was given)."""
        found = []
        for index, sample in enumerate(samples):
            try:
                self.collate([sample], train=train)
            except DataError as exc:
                found.append((index, exc))
        return found

    def _named(self, key: str, which: int, component: object) -> str:
        """How an error names key's modality (0) or encoder (1): its registered name and
        distribution when known, and its class and module."""
        kind = type(component)
        where = f"{kind.__qualname__} ({kind.__module__})"
        return f"{self.origins[key][which]}, {where}" if key in self.origins else where

    def check_keys(self, sample: Mapping[str, Any], what: str) -> None:
        """A sample may only have keys the model has encoders for."""
        unknown = sorted(set(sample) - set(self.keys))
        if unknown:
            raise DataError(
                f"{what} has {', '.join(map(repr, unknown))}, which the model has no encoder for "
                f"(its keys: {', '.join(self.keys)})"
            )


@contextlib.contextmanager
def _as_data_error(named: str, origin: str, method: str) -> Iterator[None]:
    """Whatever a plugin's ``load`` or preprocessing raises for a value is that value's
    :class:`DataError` (so ``on_error: skip`` applies to it), naming the value and the
    component (``origin``: its name, distribution, class and module)."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{named}: {exc}") from exc
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:
        raise DataError(
            f"{named}: {method} of {origin} raised {type(exc).__name__}: {bounded(str(exc))}"
        ) from exc


def _check_rows(inputs: object, count: int, who: str) -> None:
    """What a preprocessor returns is ``{name: Tensor}``, each tensor with one row per value
    it was given (the leading ``n`` that modality dropout and the scatter back into batch
    order index): a plugin's bug, named here rather than as an ``IndexError`` later."""
    if not isinstance(inputs, Mapping):
        raise ComponentError(
            f"{who} returned {type(inputs).__name__}, not a dict of tensors ({{name: Tensor}})"
        )
    for name, tensor in inputs.items():
        if not isinstance(tensor, Tensor):
            raise ComponentError(
                f"{who} returned {type(tensor).__name__} for {brief(name)}, not a Tensor"
            )
        if tensor.dim() == 0 or tensor.shape[0] != count:
            raise ComponentError(
                f"{who} returned {brief(name)} of shape {tuple(tensor.shape)} for {count} "
                f"value(s): every tensor preprocess returns has a leading dimension n = {count}, "
                "one row per value"
            )


def _origin(spec: ComponentSpec) -> str:
    return f"{spec.kind} {spec.name!r} from {spec.distribution} {spec.version}"


# -- manifests as datasets --------------------------------------------------------------------


@dataclass
class Example:
    """One loaded row: raw values per present key, and its target when labelled.

    With a feature cache, ``cached`` holds the keys whose encoder outputs were found (their
    values are not loaded, so not in ``values``) and ``entries`` the cache entries of the
    cached keys' values that were not found.
    """

    index: int
    values: dict[str, Any]
    target: Tensor | None
    cached: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)


@dataclass
class Skipped:
    """A row that could not be read, and why.

    Loader workers return this instead of raising, so that the error reaches the main process
    as its own message (a worker's exception arrives wrapped in the worker's traceback).
    ``fatal`` rows (``on_error="raise"``) are raised there by :func:`raise_fatal`; the others
    are left out, counted and listed.
    """

    manifest: str
    row: int
    error: str
    fatal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "row": self.row, "error": self.error}


def raise_fatal(skipped: Sequence[Skipped]) -> None:
    """Raise the first row error that ``on_error="raise"`` makes fatal."""
    for row in skipped:
        if row.fatal:
            raise DataError(row.error)


@dataclass
class LoadedBatch:
    """What the loader yields: the model's batch plus bookkeeping.

    Attributes:
        batch: preprocessed inputs (None when every row of it was skipped).
        targets: stacked targets, or None for unlabelled data.
        indices: the manifest row index (0-based) of each sample of ``batch``.
        skipped: rows of this batch that were left out.
        broken: a component's violation of its interface found while collating (a worker
            returns it rather than raising, so that it arrives without a worker traceback).
    """

    batch: Batch | None
    targets: Tensor | None
    indices: list[int]
    skipped: list[Skipped] = field(default_factory=list)
    broken: ComponentError | None = None

    def raise_fatal(self) -> None:
        """Raise what makes this batch fatal: a broken component, else the first row error
        that ``on_error="raise"`` makes fatal."""
        if self.broken is not None:
            raise self.broken
        raise_fatal(self.skipped)


class ManifestDataset(Dataset[Example | Skipped]):
    """The rows of a manifest, loaded through a pipeline.

    Args:
        manifest: the rows.
        pipeline: loads each key's value.
        columns: modality key -> the column it reads (only columns the manifest has).
        task: reads the label column; None for unlabelled data (prediction).
        label_column: the label's column.
        require_all: a missing value is an error instead of an absent modality.
        on_error: ``"raise"`` or ``"skip"``.

    Attributes:
        absent: columns the manifest lacks, whose keys are absent in every row.
    """

    def __init__(
        self,
        manifest: Manifest,
        pipeline: Pipeline,
        columns: Mapping[str, str],
        *,
        task: Task | None = None,
        label_column: str = "label",
        require_all: bool = False,
        on_error: str = "raise",
    ) -> None:
        self.manifest = manifest
        self.pipeline = pipeline
        self.columns = dict(sorted(columns.items()))
        self.task = task
        self.label_column = label_column
        self.require_all = require_all
        self.on_error = on_error
        self.absent: list[str] = []
        #: The feature cache rows are looked up in before they are loaded (set by training).
        self.features: FeatureCache | None = None

    @classmethod
    def from_config(
        cls,
        manifest: Manifest,
        pipeline: Pipeline,
        data: DataConfig,
        *,
        task: Task | None = None,
        missing: MissingColumns,
        keys: Sequence[str] | None = None,
    ) -> ManifestDataset:
        """A manifest's rows, read as a config's ``data`` section says.

        Args:
            task: reads the labels; None for prediction.
            missing: what a column the manifest lacks means (see :func:`columns_in`).
            keys: the keys to load (default: all the pipeline's).
        """
        columns, absent = columns_in(
            manifest, pipeline.keys if keys is None else keys, data.columns, missing=missing
        )
        dataset = cls(
            manifest,
            pipeline,
            columns,
            task=task,
            label_column=data.label,
            require_all=data.require_all,
            on_error=data.on_error,
        )
        dataset.absent = absent
        return dataset

    def empty_columns(self) -> dict[str, str]:
        """Key -> column for the columns the manifest has but that hold no value in any row
        (a CSV column left blank, the wrong column named): the key is absent everywhere."""
        return {
            key: column
            for key, column in self.columns.items()
            if column not in self.absent
            and self.manifest.rows
            and all(row.get(column) is None for row in self.manifest.rows)
        }

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def __getitem__(self, index: int) -> Example | Skipped:
        try:
            return self.load(index)
        except DataError as exc:
            fatal = self.on_error != "skip"
            return Skipped(str(self.manifest.path), self.manifest.lines[index], str(exc), fatal)

    def load(self, index: int) -> Example:
        """Load row ``index``; a problem is a :class:`DataError` naming the row and column."""
        row = self.manifest.rows[index]
        values = {key: row.get(column) for key, column in self.columns.items()}
        if self.require_all:
            for key, value in values.items():
                if value is None:
                    where = self.manifest.where(index, self.columns[key])
                    raise DataError(f"{where}: no value, and data.require_all is set")
        cached: dict[str, dict[str, Tensor]] = {}
        entries: dict[str, str] = {}
        if self.features is not None:
            cached, entries = self.features.lookup(values, self.manifest.root)
        loaded = self.pipeline.load(
            {key: value for key, value in values.items() if key not in cached},
            root=self.manifest.root,
            where=lambda key: self.manifest.where(index, self.columns[key]),
        )
        target = None
        if self.task is not None:
            try:
                target = self.task.encode(row.get(self.label_column))
            except DataError as exc:
                where = self.manifest.where(index, self.label_column)
                raise DataError(f"{where}: {exc}") from exc
        return Example(index, loaded, target, cached, entries)

    def cell(self, index: int, column: str) -> Any:
        """The raw cell of row ``index`` in ``column`` (None if empty or absent)."""
        return self.manifest.rows[index].get(column)


class Collate:
    """Turns a list of :class:`Example`/:class:`Skipped` into a :class:`LoadedBatch`.

    It is the loader's ``collate_fn``: it runs in the workers, holding the pipeline and the
    dataset (not the model). A preprocessor that refuses a value with a ``DataError`` names
    no row; the batch is then collated one row at a time to find the rows at fault, which are
    named by manifest and line and, with ``on_error: skip``, left out.
    """

    def __init__(self, pipeline: Pipeline, *, train: bool, rows: ManifestDataset | None = None):
        self.pipeline = pipeline
        self.train = train
        self.rows = rows

    def __call__(self, items: Sequence[Example | Skipped]) -> LoadedBatch:
        examples = [item for item in items if isinstance(item, Example)]
        skipped = [item for item in items if isinstance(item, Skipped)]
        try:
            try:
                batch = self._collate(examples)
            except DataError:
                if self.rows is None:
                    raise
                examples, refused = self._find_refused(examples)
                skipped += refused
                batch = self._collate(examples)
        except ComponentError as exc:
            return LoadedBatch(None, None, [], skipped, broken=exc)
        if batch is None:
            return LoadedBatch(None, None, [], skipped)
        targets = None
        if examples[0].target is not None:
            targets = torch.stack([e.target for e in examples if e.target is not None])
        return LoadedBatch(batch, targets, [e.index for e in examples], skipped)

    def _collate(self, examples: list[Example]) -> Batch | None:
        if not examples:
            return None
        batch = self.pipeline.collate([e.values for e in examples], train=self.train)
        features = self.rows.features if self.rows is not None else None
        if features is not None:
            for key in features.keys:
                _add_cached(batch, key, examples, features)
        return batch

    def _find_refused(self, examples: list[Example]) -> tuple[list[Example], list[Skipped]]:
        assert self.rows is not None
        manifest, fatal = self.rows.manifest, self.rows.on_error != "skip"
        found = dict(self.pipeline.refused([e.values for e in examples], train=self.train))
        refused = [
            Skipped(
                str(manifest.path),
                manifest.lines[example.index],
                f"{manifest.where(example.index)}: {found[position]}",
                fatal,
            )
            for position, example in enumerate(examples)
            if position in found
        ]
        kept = [example for position, example in enumerate(examples) if position not in found]
        return kept, refused


def _add_cached(batch: Batch, key: str, examples: list[Example], features: FeatureCache) -> None:
    """Make the rows whose ``key`` outputs the cache had present again, with those outputs as
    the batch's ``encoded[key]``; the rows the pipeline loaded keep their inputs and bring
    their entries (to be written once encoded)."""
    hits = [e.cached.get(key) for e in examples]
    entries = [e.entries.get(key) for e in examples]
    if all(hit is None and entry is None for hit, entry in zip(hits, entries, strict=True)):
        return  # nothing of this key is cached or to be cached: the encoder runs as always
    present = [hit is not None or key in e.values for e, hit in zip(examples, hits, strict=True)]
    batch.present[key] = torch.tensor(present, dtype=torch.bool)
    rows = [row for row, has in enumerate(present) if has]
    batch.encoded[key] = features.encoded(key, [hits[r] for r in rows], [entries[r] for r in rows])


def _worker_init(worker_id: int) -> None:
    # Each worker would otherwise start as many threads as there are cores.
    torch.set_num_threads(1)


def make_loader(
    dataset: ManifestDataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    ranks: Ranks | None = None,
) -> DataLoader[Example | Skipped]:
    """A loader over ``dataset``, shuffled when ``train`` (in an order fixed by ``seed``).

    Workers are started anew each epoch (not persistent), seeded from the loader's
    generator: an epoch's random choices depend only on ``seed``, so a resumed run replays
    exactly what an uninterrupted one would have done.

    Args:
        batch_size: the global batch.
        ranks: with more than one process, this one's share of each batch of the order one
            process would see (:class:`~mmplug.data.sharding.ShardedBatches`).
    """
    generator = torch.Generator().manual_seed(seed)
    collate = Collate(dataset.pipeline, train=train, rows=dataset)
    init = _worker_init if num_workers else None
    if ranks is None or ranks.world == 1:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            num_workers=num_workers,
            collate_fn=collate,
            generator=generator,
            worker_init_fn=init,
        )
    # What DataLoader(shuffle=train) makes, drawing from the generator in the same order
    order: Sampler[int] = (
        RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
    )
    return DataLoader(
        dataset,
        batch_sampler=ShardedBatches(BatchSampler(order, batch_size, drop_last=False), ranks),
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=init,
    )
