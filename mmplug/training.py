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
    read_manifest,
)
from mmplug.errors import ConfigError, ConfigIssue, MmplugError
from mmplug.interfaces import Encoder
from mmplug.labels import CLASS_TASKS, Labels
from mmplug.progress import Reporter
from mmplug.registry import Registry
from mmplug.rundir import (
    LAST,
    RunDir,
)
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
    else:
        if config is None:
            raise MmplugError("train needs a config (or a run directory to resume)")
        config = load_config(config, overrides)
    data = _data_section(config)
    manifests = {split: read_manifest(path) for split in SPLITS if (path := getattr(data, split))}
    config = fill_head_size(config, registry, manifests["train"], data)
    settings = config.train
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    if resume is not None:
        model = load_model(run.checkpoint(LAST), registry=registry)
        labels = run.labels()
    else:
        model = build_model(config, registry=registry)
        train_labels = [row.get(data.label) for row in manifests["train"].rows]
        labels = Labels.from_values(
            model.head.task, train_labels, classes=data.classes, separator=data.label_separator
        )
    check_head_fits(labels, model)
    columns = check_columns(data, model.keys, manifests)
    monitor, mode = _monitor(settings, model, "val" in manifests)
    datasets = {
        split: ManifestDataset(
            manifest,
            columns,
            model.modalities,
            labels=labels,
            label_column=data.label,
            require_all=data.require_all,
            on_error=data.on_error,
        )
        for split, manifest in manifests.items()
    }
    if resume is None:
        run = _new_run(out, config)
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


def fill_head_size(config: Config, registry: Registry, train: Manifest, data: DataConfig) -> Config:
    """Fill the head's ``num_classes`` (or ``num_labels``) from the data when left out.

    A head whose params have such a field and whose config doesn't set it gets the number of
    classes in ``data.classes``, or else in the training manifest's label column.
    """
    head = config.model.head
    try:
        spec = registry.get("head", head.name)
    except MmplugError:
        return config  # resolving the model reports it, with every other problem
    for name, multilabel in zip(HEAD_SIZES, (False, True), strict=True):
        if name in spec.params.model_fields and head.params.get(name) is None:
            train.require_column(data.label, "the label column, data.label")
            if data.classes is not None:
                count = len(data.classes)
            else:
                task = "multilabel" if multilabel else "classification"
                values = [row.get(data.label) for row in train.rows if row.get(data.label)]
                count = len(
                    Labels.from_values(task, values, separator=data.label_separator).classes
                )
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
) -> dict[str, str]:
    """Modality key -> column, after checking every column exists in every manifest.

    Raises:
        ConfigError: ``data.columns`` names a key the model has no encoder for.
        DataError: a manifest lacks a column (with close matches).
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
    for manifest in manifests.values():
        manifest.require_column(data.label, "the label column, data.label")
        for key, column in columns.items():
            manifest.require_column(column, f"read by model key {key!r}; see data.columns")
    return columns


def _monitor(settings: TrainConfig, model: MultimodalModel, has_val: bool) -> tuple[str, str]:
    monitor = settings.monitor
    if not has_val:
        if monitor != "val_loss":
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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError([ConfigIssue("train.device", str(exc))]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError([ConfigIssue("train.device", "CUDA is not available on this machine")])
    return device


def _new_run(out: str | Path | None, config: Config) -> RunDir:
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
    path = Path(out)
    if path.exists() and any(path.iterdir()):
        raise MmplugError(
            f"{path} already exists and is not empty: choose another --out, or continue it "
            f"with --resume {path}"
        )
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def _resume_config(
    run: RunDir, given: ConfigSource | Config | None, overrides: Sequence[str], registry: Registry
) -> Config:
    """The config a resumed run continues with: its own, or ``given`` if only ``train`` differs."""
    saved = load_config(run.config_data())
    if given is None:
        return load_config(saved, overrides)
    config = load_config(given, overrides)
    saved_head, head = saved.model.head.params, config.model.head.params
    filled = [k for k in HEAD_SIZES if k in saved_head and head.get(k) is None]
    config = load_config(config, [f"model.head.{k}={saved_head[k]}" for k in filled])
    differs = []
    if resolve_model(config, registry).to_config() != resolve_model(saved, registry).to_config():
        differs.append("model")
    if resolved_paths(config.data) != resolved_paths(saved.data):
        differs.append("data")
    if differs:
        raise ConfigError(
            [
                ConfigIssue(
                    section,
                    f"differs from the {section} section of {run.path / 'config.yaml'}; a "
                    "resumed run keeps its model and data (only train settings may change)",
                )
                for section in differs
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
    samples = [
        item.values
        for item in map(subset.__getitem__, range(len(subset)))
        if isinstance(item, Example)
    ]
    reporter.log(f"fitting encoder(s) {', '.join(keys)} on {len(samples)} training rows")
    model.fit_encoders(samples)
