"""``mmplug train``: from a config and manifests to a run directory.

:func:`train` prepares everything the loop needs and checks it before the first step: it
reads the manifests (every column the config names must exist), builds the model by name
(filling the head's size from the data's classes), maps labels, fits encoders that learn
preprocessing (a tokenizer), and writes the run's ``config.yaml``, ``labels.json`` and
``plugins.json``. Then :class:`mmplug.trainer.Trainer` runs the epochs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmplug.assembly import MultimodalModel, build_model
from mmplug.checkpoint import load_model
from mmplug.config import Config, ConfigSource, load_config, resolve_model
from mmplug.data import (
    Example,
    Manifest,
    ManifestDataset,
    columns_for,
    raise_fatal,
    read_labelled_manifest,
)
from mmplug.errors import ConfigError, ConfigIssue, DataError, MmplugError
from mmplug.files import existing_dir
from mmplug.interfaces import Encoder
from mmplug.labels import CLASS_TASKS, Labels
from mmplug.progress import Reporter
from mmplug.registry import Registry
from mmplug.rundir import BEST, CONFIG, LAST, RunDir
from mmplug.sections import DataConfig, TrainConfig
from mmplug.trainer import Trainer, seed_everything

SPLITS = ("train", "val", "test")
#: Params of a head that the data can fill in: classification, multilabel.
HEAD_SIZES = ("num_classes", "num_labels")
LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse")


def train(
    config: ConfigSource | Config | None = None,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    registry: Registry | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Train a model; returns the run directory.

    Args:
        config: a config file, dict or :class:`Config` with ``model`` and ``data`` sections.
            With ``resume`` it may be left out (the run's own config is used); if given, its
            ``model`` and ``data`` must match the run's, while ``train`` may change (e.g.
            more epochs).
        overrides: ``dotted.key=value`` strings applied to the config.
        out: the run directory to create; default ``runs/<config name>-<time>``.
        resume: a run directory to continue from its ``last/`` checkpoint.
        registry: where names are looked up; default: the installed plugins'.
        reporter: where progress goes; default: log lines on stdout, bars on a terminal.

    Raises:
        ConfigError: the config is invalid, or doesn't match the data (columns, classes).
        DataError: a manifest or row can't be read (unless ``data.on_error: skip``).
    """
    reporter = reporter or Reporter()
    if registry is None:
        from mmplug.plugins import default_registry

        registry = default_registry()
    if resume is not None:
        run = RunDir.open(resume)
        run.check_plugins(registry)
        config = _resume_config(run, config, overrides, registry)
        if existing_dir(run.path / LAST) is None:
            reporter.log(f"{run.path} has no checkpoint yet: starting it from the beginning")
            resume, out = None, run.path
    elif config is None:
        raise MmplugError("train needs a config (or a run directory to resume)")
    else:
        config = load_config(config, overrides)
    data = _data_section(config)
    manifests = read_manifests(data)
    config = fill_head_size(config, registry, manifests["train"], data)
    settings = config.train
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    if resume is not None:
        model = load_model(run.checkpoint(LAST), registry=registry)
        labels = run.labels()
    else:
        model = build_model(config, registry=registry)
        labels = infer_labels(model, manifests["train"], data)
    check_head_fits(labels, model)
    columns, absent = check_columns(data, model.keys, manifests)
    for manifest, column in absent:
        reporter.log(f"note: {manifest.path} has no column {column!r}; absent in every row")
    monitor, mode = _monitor(settings, model, "val" in manifests)
    datasets = {
        split: ManifestDataset.from_config(manifest, columns, model.modalities, data, labels)
        for split, manifest in manifests.items()
    }
    if resume is None:
        run = _new_run(out)
        _fit_encoders(model, datasets["train"], reporter)
        run.write_labels(labels)
    assert model.resolved is not None
    run.write_config(resolved_config(config, model))
    run.write_plugins(model.resolved.distributions())
    trainer = Trainer(model, settings, datasets, run, reporter, device, monitor, mode, data)
    if resume is not None:
        trainer.restore(run.checkpoint(LAST))
    trainer.fit()
    return run.path


# -- preparing --------------------------------------------------------------------------------


def _data_section(config: Config) -> DataConfig:
    if config.data is None:
        raise ConfigError(
            [ConfigIssue("data", "training needs a data section: data: {train: train.jsonl}")]
        )
    return config.data


def resolved_config(config: Config, model: MultimodalModel) -> dict[str, Any]:
    """The whole config with every default written out and manifest paths absolute."""
    assert model.resolved is not None
    return {
        "model": model.resolved.to_config(),
        "data": resolved_paths(config.data),
        "train": config.train.model_dump(mode="json"),
    }


def read_manifests(data: DataConfig) -> dict[str, Manifest]:
    """Read every split's manifest; each must have rows and the label column."""
    return {
        split: read_labelled_manifest(path, data.label)
        for split in SPLITS
        if (path := getattr(data, split)) is not None
    }


def label_values(manifest: Manifest, data: DataConfig, task: str) -> list[Any]:
    """A manifest's label cells that are labels of ``task``, missing ones passed over.

    Raises:
        DataError: a cell is not a label of ``task``, naming its row (with
            ``on_error: skip`` the row is passed over; loading it will skip it again).
    """
    values = []
    for index, row in enumerate(manifest.rows):
        value = row.get(data.label)
        try:
            Labels.from_values(task, [value], separator=data.label_separator)
        except DataError as exc:
            if data.on_error == "skip":
                continue
            raise DataError(f"{manifest.where(index, data.label)}: {exc}") from exc
        values.append(value)
    return values


def infer_labels(model: MultimodalModel, train: Manifest, data: DataConfig) -> Labels:
    """The run's labels: the head's task, the classes given or found in ``train``."""
    task = model.head.task
    return Labels.from_values(
        task,
        label_values(train, data, task),
        classes=data.classes,
        separator=data.label_separator,
        size=model.head.output_dim if task == "regression" else None,
    )


def fill_head_size(config: Config, registry: Registry, train: Manifest, data: DataConfig) -> Config:
    """Fill the head's ``num_classes`` (or ``num_labels``) from the data when left out.

    A head whose params have such a field and whose config leaves it out or null gets the
    number of classes in ``data.classes``, or else in the training manifest's label column.
    """
    head = config.model.head
    try:
        spec = registry.get("head", head.name)
    except MmplugError:
        return config  # resolving the model reports it, with every other problem
    for name, task in zip(HEAD_SIZES, CLASS_TASKS, strict=True):
        if name in spec.params.model_fields and head.params.get(name) is None:
            if data.classes is not None:
                count = len(data.classes)
            else:
                values = label_values(train, data, task)
                labels = Labels.from_values(task, values, separator=data.label_separator)
                count = len(labels.classes)
            return load_config(config, [f"model.head.{name}={count}"])
    return config


def check_head_fits(labels: Labels, model: MultimodalModel) -> None:
    """The head must have one output per class."""
    if labels.task not in CLASS_TASKS or model.head.output_dim == len(labels.classes):
        return
    shown = ", ".join(labels.classes[:10]) + (", ..." if len(labels.classes) > 10 else "")
    raise ConfigError(
        [
            ConfigIssue(
                "model.head",
                f"the head has {model.head.output_dim} outputs but the data has "
                f"{len(labels.classes)} classes ({shown}); leave num_classes/num_labels out to "
                "take it from the data, or list data.classes",
            )
        ]
    )


def check_columns(
    data: DataConfig, keys: Sequence[str], manifests: Mapping[str, Manifest]
) -> tuple[dict[str, str], list[tuple[Manifest, str]]]:
    """Modality key -> column, after checking the columns against the manifests.

    The training manifest must have every column (a missing one is most likely a typo);
    another split may lack one, which is then absent in all its rows.

    Returns:
        The columns, and the ``(manifest, column)`` pairs found missing outside training.

    Raises:
        ConfigError: ``data.columns`` names a key the model has no encoder for.
        DataError: the training manifest lacks a column (with close matches).
    """
    unknown = sorted(set(data.columns) - set(keys))
    if unknown:
        raise ConfigError(
            [
                ConfigIssue(f"data.columns.{key}", f"the model has no encoder {key!r} ({keys})")
                for key in unknown
            ]
        )
    columns = columns_for(keys, data.columns)
    absent = []
    for split, manifest in manifests.items():
        for key, column in columns.items():
            if split == "train":
                manifest.require_column(column, f"read by model key {key!r}; see data.columns")
            elif column not in manifest.columns:
                absent.append((manifest, column))
    return columns, absent


def _monitor(settings: TrainConfig, model: MultimodalModel, has_val: bool) -> tuple[str, str]:
    monitor = settings.monitor
    if not has_val:
        if monitor.startswith("val_") and monitor != "val_loss":
            issue = ConfigIssue("train.monitor", f"{monitor!r} needs a val manifest (data.val)")
            raise ConfigError([issue])
        monitor = "train_loss"
    else:
        known = ["train_loss", "val_loss", *(f"val_{name}" for name in model.head.metrics())]
        if monitor not in known:
            raise ConfigError(
                [ConfigIssue("train.monitor", f"unknown metric {monitor!r}; one of {known}")]
            )
    mode = settings.monitor_mode
    if mode == "auto":
        mode = "min" if monitor.endswith(LOWER_IS_BETTER) else "max"
    return monitor, mode


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be usable here.

    Args:
        setting: how the user gave ``name``, for the error (``--device``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this machine")
        torch.empty(0, device=device)  # an index or a backend this machine doesn't have
    except (RuntimeError, AssertionError) as exc:
        raise ConfigError([ConfigIssue(setting, f"can't use device {name!r}: {exc}")]) from None
    return device


def _new_run(out: str | Path | None) -> RunDir:
    """Create the run directory; one left by a start that failed before any checkpoint is
    reused, anything else non-empty is refused."""
    path = Path(out) if out is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if path.exists() and any(path.iterdir()):
        failed_start = (path / CONFIG).is_file() and not any(
            existing_dir(path / name) for name in (BEST, LAST)
        )
        if not failed_start:
            raise MmplugError(
                f"{path} already exists and is not empty: choose another --out, or continue it "
                f"with --resume {path}"
            )
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


#: Train settings a resumed run can't change: its steps and its best checkpoint depend on them.
FIXED_ON_RESUME = ("batch_size", "grad_accumulation", "monitor", "monitor_mode")


def _resume_config(
    run: RunDir, given: ConfigSource | Config | None, overrides: Sequence[str], registry: Registry
) -> Config:
    """The config a resumed run continues with: its own, or ``given``, plus ``overrides``;
    only ``train`` settings may differ from the run's, and not those in FIXED_ON_RESUME."""
    saved = load_config(run.config_data())
    config = load_config(saved if given is None else given, overrides)
    saved_head, head = saved.model.head.params, config.model.head.params
    filled = [k for k in HEAD_SIZES if k in saved_head and head.get(k) is None]
    config = load_config(config, [f"model.head.{k}={saved_head[k]}" for k in filled])
    issues = []
    if resolve_model(config, registry).to_config() != resolve_model(saved, registry).to_config():
        issues.append(ConfigIssue("model", "differs from the run's"))
    if resolved_paths(config.data) != resolved_paths(saved.data):
        issues.append(ConfigIssue("data", "differs from the run's"))
    for key in FIXED_ON_RESUME:
        if getattr(config.train, key) != getattr(saved.train, key):
            issues.append(ConfigIssue(f"train.{key}", "differs from the run's"))
    if issues:
        raise ConfigError(
            [
                *issues,
                ConfigIssue(
                    "",
                    f"a resumed run keeps the model, data and {', '.join(FIXED_ON_RESUME)} of "
                    f"{run.path / CONFIG}; start a new run to change them",
                ),
            ]
        )
    return config


def resolved_paths(data: DataConfig | None) -> dict[str, Any] | None:
    if data is None:
        return None
    dump = data.model_dump(mode="json")
    for split in SPLITS:
        if dump[split] is not None:
            dump[split] = str(Path(dump[split]).expanduser().resolve())
    return dump


def _fit_encoders(model: MultimodalModel, dataset: ManifestDataset, reporter: Reporter) -> None:
    """Give encoders that learn preprocessing (``fit``) the training split's values."""
    keys = [key for key, enc in model.encoder_items() if type(enc).fit is not Encoder.fit]
    if not keys:
        return
    subset = ManifestDataset(
        dataset.manifest,
        {key: dataset.columns[key] for key in keys},
        {key: dataset.modalities[key] for key in keys},
        require_all=dataset.require_all,
        on_error=dataset.on_error,
    )
    items = [subset[index] for index in range(len(subset))]
    raise_fatal([item for item in items if not isinstance(item, Example)])
    samples = [item.values for item in items if isinstance(item, Example)]
    reporter.log(f"fitting encoder(s) {', '.join(keys)} on {len(samples)} training rows")
    model.fit_encoders(samples)
