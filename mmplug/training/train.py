"""``mmplug train``: from a config and manifests to a run directory.

:func:`train` prepares everything the loop needs and checks it before the first step: it
reads the manifests (every column the config names must exist in the training one), reads the
training labels once into the head's task (which also gives the head's size when the config
leaves it null), builds the model by name, fits encoders that learn preprocessing (a
tokenizer), makes the data pipeline, and writes the run's ``config.yaml``, ``labels.json``
and ``plugins.json``. Then :class:`mmplug.training.trainer.Trainer` runs the epochs.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmplug.data.manifest import Manifest, read_labelled_manifest, read_labels
from mmplug.data.pipeline import Example, ManifestDataset, Pipeline, raise_fatal
from mmplug.errors import ConfigError, ConfigIssue, MmplugError
from mmplug.files import existing_dir
from mmplug.model.build import build_model
from mmplug.model.checkpoint import load_model
from mmplug.model.config import Config, ConfigSource, load_config, with_head_param
from mmplug.model.devices import resolve_device
from mmplug.model.interfaces import Encoder, Head
from mmplug.model.multimodal import MultimodalModel
from mmplug.model.resolve import resolve_model
from mmplug.model.sections import DataConfig, TrainConfig
from mmplug.model.tasks import Task
from mmplug.plugins.registry import Registry
from mmplug.runs.lock import LOCK_FILE, locked_run
from mmplug.runs.rundir import BEST, CONFIG, LABELS, LAST, METRICS, PLUGINS, RunDir
from mmplug.training.progress import Reporter
from mmplug.training.trainer import Trainer, seed_everything

SPLITS = ("train", "val", "test")


def train(
    config: ConfigSource | Config | None = None,
    overrides: Sequence[str] = (),
    *,
    registry: Registry,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Train a model; returns the run directory.

    Args:
        config: a config file, dict or :class:`Config` with ``model`` and ``data`` sections.
            With ``resume`` it may be left out (the run's own config is used); if given, its
            ``model`` and ``data`` must match the run's, while ``train`` may change (e.g.
            more epochs).
        overrides: ``dotted.key=value`` strings applied to the config.
        registry: where names are looked up.
        out: the run directory to create; default ``runs/<time>``.
        resume: a run directory to continue from its ``last/`` checkpoint.
        reporter: where progress goes; default: log lines on stdout, bars on a terminal.

    Raises:
        ConfigError: the config is invalid, or doesn't match the data (columns, classes).
        DataError: a manifest or row can't be read (unless ``data.on_error: skip``).
    """
    reporter = reporter or Reporter()
    if resume is None and config is None:
        raise MmplugError("train needs a config (or a run directory to resume)")
    if resume is not None and not Path(resume).is_dir():
        raise MmplugError(f"{resume} is not a run directory (no such folder)")
    target = Path(resume) if resume is not None else _default_out(out)
    created = not target.exists()
    if resume is None and not created:
        _check_new_run(target)  # before the lock file goes into a folder that is not a run's
    with locked_run(target):
        try:
            return _train_locked(config, overrides, registry, target, resume is not None, reporter)
        except BaseException:
            if resume is None and [p.name for p in target.iterdir()] == [LOCK_FILE]:
                (target / LOCK_FILE).unlink()  # nothing was written: leave nothing behind
                if created:
                    target.rmdir()
            raise


def _train_locked(
    config: ConfigSource | Config | None,
    overrides: Sequence[str],
    registry: Registry,
    target: Path,
    resuming: bool,
    reporter: Reporter,
) -> Path:
    """:func:`train`, with the run directory ``target`` locked."""
    run: RunDir | None = None
    if resuming and unstarted(target) and not (target / CONFIG).is_file():
        if config is None:
            raise MmplugError(
                f"{target} was left by a run stopped before its config.yaml was written; "
                f"start it again with: mmplug train CONFIG --out {target}"
            )
        config = load_config(config, overrides)
        resuming = False
    elif resuming:
        run = RunDir.open(target)
        run.check_plugins(registry)
        config = _resume_config(run, config, overrides, registry)
        if existing_dir(run.path / LAST) is None:
            reporter.log(f"{run.path} has no checkpoint yet: starting it from the beginning")
            resuming, run = False, None
    else:
        assert config is not None
        config = load_config(config, overrides)
        _check_new_run(target)
    data = _data_section(config)
    manifests = read_manifests(data)
    settings = config.train
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    if run is not None:
        model = load_model(run.checkpoint(LAST), registry)
        task = run.task(model.head)
    else:
        model, config, task = build_for_training(config, registry, manifests["train"], data)
    keys = check_columns(data, model.keys)
    check_balance(settings, model, has_val="val" in manifests)
    monitor, mode = _monitor(settings, task, model.head, "val" in manifests)
    new_run = target if run is None else None
    pipeline = Pipeline.from_model(model)
    if new_run is not None:
        fit_encoders_on_split(model, pipeline, manifests["train"], data, reporter)
    datasets = {
        split: ManifestDataset.from_config(
            manifest,
            pipeline,
            data,
            task=task,
            missing="error" if split == "train" else "absent",
            keys=keys,
        )
        for split, manifest in manifests.items()
    }
    for dataset in datasets.values():
        for column in dataset.absent:
            reporter.log(
                f"note: {dataset.manifest.path} has no column {column!r}; absent in every row"
            )
        for key, column in dataset.empty_columns().items():
            reporter.log(
                f"warning: {dataset.manifest.path} column {column!r} (key {key!r}) is empty "
                f"in every row: the model sees no {key} there. Is it the right column?"
            )
    if new_run is not None:
        new_run.mkdir(parents=True, exist_ok=True)
        run = RunDir(new_run)
        run.write_labels(task)
    assert run is not None and model.resolved is not None
    run.write_config(resolved_config(config, model))
    run.write_plugins(model.resolved.distributions())
    trainer = Trainer(model, task, settings, datasets, run, reporter, device, monitor, mode, data)
    if resuming:
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


def build_for_training(
    config: Config, registry: Registry, train_split: Manifest, data: DataConfig
) -> tuple[MultimodalModel, Config, Task]:
    """Build the model, with the head's size from the training labels when left null.

    The labels are read once: before building when the head's factory is a :class:`Head`
    class (its task is known, and gives the size), after building otherwise.

    Returns:
        The model, the config as built (size filled in) and the task fitted to the head.
    """
    task_class = head_task_class(config, registry)
    task = None if task_class is None else read_labels(train_split, data, task_class)
    if task is not None and task.size_param is not None:
        size = task.size()
        if size is not None and config.model.head.params.get(task.size_param) is None:
            spec = registry.get("head", config.model.head.name)
            if task.size_param in spec.params.model_fields:
                config = with_head_param(config, task.size_param, size)
    model = build_model(config, registry)
    if task is None:
        task = read_labels(train_split, data, model.head.task_class())
    return model, config, task.with_outputs(model.head.output_dim)


def head_task_class(config: Config, registry: Registry) -> type[Task] | None:
    """The task of the config's head, known before it is built when its factory is a
    :class:`Head` class; None otherwise (or when the name doesn't resolve: building says
    why, with every other problem of the config)."""
    try:
        factory = registry.get("head", config.model.head.name).load_factory()
    except (MmplugError, ImportError, AttributeError, TypeError):
        return None
    if isinstance(factory, type) and issubclass(factory, Head):
        return factory.task_class()
    return None


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


def check_columns(data: DataConfig, keys: Sequence[str]) -> list[str]:
    """The model's keys, after checking that ``data.columns`` names only those.

    Raises:
        ConfigError: ``data.columns`` names a key the model has no encoder for.
    """
    unknown = sorted(set(data.columns) - set(keys))
    if unknown:
        raise ConfigError(
            [
                ConfigIssue(f"data.columns.{key}", f"the model has no encoder {key!r} ({keys})")
                for key in unknown
            ]
        )
    return list(keys)


def check_balance(settings: TrainConfig, model: MultimodalModel, *, has_val: bool) -> None:
    """The balancing settings fit the model: modulation has unimodal heads to read,
    Gradient-Blending a validation split, and per-key settings (``encoder_lr``,
    ``encoder_warmup``, ``unimodal_loss``) name the model's keys.

    Raises:
        ConfigError: naming the setting.
    """
    issues = []
    if settings.unimodal_loss == "auto" and not has_val:
        issues.append(
            ConfigIssue(
                "train.unimodal_loss",
                "'auto' (Gradient-Blending) weighs the heads by their validation losses: "
                "set data.val, or give the weights",
            )
        )
    if settings.modulation and model.unimodal_heads is None:
        issues.append(
            ConfigIssue(
                "train.modulation",
                "gradient modulation compares the unimodal heads' losses: set "
                "model.unimodal_heads: true (or use the late fusion)",
            )
        )
    for name in ("encoder_lr", "encoder_warmup", "unimodal_loss"):
        chosen = getattr(settings, name)
        if isinstance(chosen, dict):
            issues += [
                ConfigIssue(
                    f"train.{name}.{key}", f"the model has no encoder {key!r} ({model.keys})"
                )
                for key in sorted(set(chosen) - set(model.keys))
            ]
    if issues:
        raise ConfigError(issues)


def _monitor(settings: TrainConfig, task: Task, head: Head, has_val: bool) -> tuple[str, str]:
    """The metric that picks ``best/`` and stops early, and whether lower is better."""
    monitor = settings.monitor
    known = ["train_loss", "val_loss", *(f"val_{name}" for name in head.metrics())]
    if monitor not in known:
        close = difflib.get_close_matches(monitor, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            [ConfigIssue("train.monitor", f"unknown metric {monitor!r}{hint}; one of {known}")]
        )
    if not has_val:
        if monitor not in ("train_loss", "val_loss"):
            issue = ConfigIssue("train.monitor", f"{monitor!r} needs a val manifest (data.val)")
            raise ConfigError([issue])
        monitor = "train_loss"  # the default val_loss, without a val manifest
    mode = settings.monitor_mode
    if mode == "auto":
        mode = task.direction(monitor.split("_", 1)[1])
    return monitor, mode


def _default_out(out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")


#: What a run writes before its first checkpoint (and metrics.jsonl, written just before it).
EARLY_FILES = frozenset({CONFIG, LABELS, PLUGINS, METRICS, LOCK_FILE})


def unstarted(path: Path) -> bool:
    """True for a run directory that holds no checkpoint and nothing but what a run writes
    before its first one, or those files' staging copies (``.NAME.<pid>.*``): a start that
    failed or was killed. Any other file (``.git``, notes) makes it someone else's folder."""
    if any(existing_dir(path / name) for name in (BEST, LAST)):
        return False
    staging = tuple(f".{name}." for name in (*EARLY_FILES, BEST, LAST))
    return all(p.name in EARLY_FILES or p.name.startswith(staging) for p in path.iterdir())


def _check_new_run(path: Path) -> None:
    """A new run may go into an empty folder, or one left by a start that failed before its
    first checkpoint (it is written over); anything else is refused."""
    if not unstarted(path):
        raise MmplugError(
            f"{path} already exists and is not empty: choose another --out, or continue it "
            f"with --resume {path}"
        )


#: Train settings a resumed run can't change: its steps and its best checkpoint depend on them.
FIXED_ON_RESUME = ("batch_size", "grad_accumulation", "monitor", "monitor_mode")


def _resume_config(
    run: RunDir, given: ConfigSource | Config | None, overrides: Sequence[str], registry: Registry
) -> Config:
    """The config a resumed run continues with: its own, or ``given``, plus ``overrides``;
    only ``train`` settings may differ from the run's, and not those in FIXED_ON_RESUME."""
    saved = load_config(run.config_data())
    config = load_config(saved if given is None else given, overrides)
    task_class = head_task_class(saved, registry)
    size = None if task_class is None else task_class.size_param
    if size is not None and config.model.head.params.get(size) is None:
        filled = saved.model.head.params.get(size)  # taken from the data when the run started
        if filled is not None:
            config = with_head_param(config, size, filled)
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
    """The ``data`` section with manifest paths absolute (how runs compare and save it)."""
    if data is None:
        return None
    dump = data.model_dump(mode="json")
    for split in SPLITS:
        if dump[split] is not None:
            dump[split] = str(Path(dump[split]).expanduser().resolve())
    return dump


def fit_encoders_on_split(
    model: MultimodalModel,
    pipeline: Pipeline,
    train_split: Manifest,
    data: DataConfig,
    reporter: Reporter,
) -> None:
    """Give encoders that learn preprocessing (``fit``) the training split's values."""
    keys = [key for key, enc in model.encoder_items() if type(enc).fit is not Encoder.fit]
    if not keys:
        return
    loading = ManifestDataset.from_config(train_split, pipeline, data, missing="error", keys=keys)
    items = [loading[index] for index in range(len(loading))]
    raise_fatal([item for item in items if not isinstance(item, Example)])
    samples = [item.values for item in items if isinstance(item, Example)]
    reporter.log(f"fitting encoder(s) {', '.join(keys)} on {len(samples)} training rows")
    model.fit_encoders(samples)
