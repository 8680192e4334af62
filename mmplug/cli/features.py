"""The commands about encoder features: ``encode`` (pre-fill the feature cache, export
embeddings) and ``cache info`` / ``cache clear``.

Like the running commands they import torch when they run, not when the command line is
parsed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmplug.errors import ConfigError, ConfigIssue, MmplugError

if TYPE_CHECKING:
    from mmplug.model.config import Config
    from mmplug.model.multimodal import MultimodalModel
    from mmplug.plugins.registry import Registry
    from mmplug.training.progress import Reporter


def add_feature_commands(commands: Any) -> None:
    """``encode``, ``cache info``, ``cache clear``."""
    cmd = commands.add_parser(
        "encode",
        help="run a manifest through a model's encoders: fill the feature cache, export embeddings",
        description="Pass every row of MANIFEST through the encoders of a config's model "
        "(built and fitted on data.train, as training does) or of a run's best/ checkpoint. "
        "Frozen encoders' outputs go into the feature cache (train.feature_cache), so that "
        "training reads them instead of computing them; with --out, the pooled embeddings "
        "are written to a safetensors file: <key> [rows, D], present_<key> [rows], row "
        "[rows] (manifest line numbers).",
    )
    cmd.add_argument(
        "args",
        nargs="+",
        metavar="CONFIG|RUN_DIR [KEY=VALUE ...]",
        help="a config or a run directory, then dotted overrides (train.feature_cache=DIR, "
        "train.device=cpu); a run's model can't be overridden",
    )
    cmd.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL or CSV to encode")
    cmd.add_argument(
        "--out", metavar="FILE", help="write the pooled embeddings here (.safetensors)"
    )
    cmd.add_argument("--quiet", action="store_true", help="print nothing but errors")
    # overrides may also follow the options (argparse leaves them in args.extra)
    cmd.set_defaults(run=cmd_encode, extra=[])

    cache = commands.add_parser(
        "cache",
        help="the feature cache: where it is and its size, or empty it",
        description="The feature cache that training and 'mmplug encode' fill (see "
        "train.feature_cache). DIR is the cache folder as train.feature_cache names it; "
        "default: $MMPLUG_CACHE_DIR, else the user cache folder.",
    )
    actions = cache.add_subparsers(title="commands", metavar="COMMAND", required=True)
    info = actions.add_parser("info", help="where the cache is, its entries and size on disk")
    info.add_argument("--dir", metavar="DIR", help="the cache folder (default: the user's)")
    info.set_defaults(run=cmd_cache_info)
    clear = actions.add_parser("clear", help="remove every entry")
    clear.add_argument("--dir", metavar="DIR", help="the cache folder (default: the user's)")
    clear.set_defaults(run=cmd_cache_clear)


# -- encode ----------------------------------------------------------------------------------


def cmd_encode(args: argparse.Namespace) -> int:
    from mmplug.cli.running import split_config_and_overrides
    from mmplug.data.encoding import check_out, encode_manifest
    from mmplug.data.feature_cache import plan_for_settings
    from mmplug.data.manifest import read_manifest
    from mmplug.data.pipeline import ManifestDataset, Pipeline
    from mmplug.model.devices import resolve_device
    from mmplug.training.progress import Reporter

    source, overrides = split_config_and_overrides(args.args)
    unknown = [word for word in args.extra if "=" not in word or word.startswith("-")]
    if unknown:
        raise MmplugError(f"unrecognized arguments: {' '.join(unknown)}")
    overrides += args.extra
    if source is None:
        raise MmplugError("encode needs a CONFIG file or a RUN_DIR first")
    reporter = Reporter(quiet=args.quiet)
    manifest = read_manifest(args.data)  # before building: a wrong path fails fast
    if args.out is not None:
        check_out(args.out)
    model, config = prepare_model(source, overrides, args.host.registry, reporter)
    assert config.data is not None  # prepare_model checks
    settings = config.train
    device = resolve_device(settings.device)
    model.to(device)
    plan = plan_for_settings(model, settings, device)
    for line in plan.describe():
        reporter.log(line)
    if plan.cache is None and args.out is None:
        why = "; ".join(f"{key}: {reason}" for key, reason in sorted(plan.reasons.items()))
        raise MmplugError(
            f"nothing to do: no encoder's outputs can be cached ({why}); give --out FILE to "
            "write the embeddings"
        )
    # Without --out only the cached keys' encoders need to run.
    keys = model.keys if args.out is not None or plan.cache is None else sorted(plan.cache.keys)
    dataset = ManifestDataset.from_config(
        manifest, Pipeline.from_model(model), config.data, missing="absent", keys=keys
    )
    result = encode_manifest(
        model,
        dataset,
        cache=plan.cache,
        out=args.out,
        device=device,
        precision=settings.precision,
        batch_size=settings.eval_batch_size or settings.batch_size,
        num_workers=config.data.num_workers,
        progress=reporter.bar,
    )
    reporter.log(f"encoded {result.rows} rows of {args.data}")
    if plan.cache is not None:
        for key, counts in result.cached.items():
            reporter.log(
                f"  {key}: {counts.written} added to the feature cache, {counts.found} "
                "already there"
            )
    if args.out is not None:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in result.shapes.items())
        reporter.log(f"wrote {args.out}: {shapes}")
    if result.skipped and not args.quiet:
        print(f"skipped {len(result.skipped)} row(s) that could not be read:", file=sys.stderr)
        for row in result.skipped:
            print(f"  row {row.row}: {row.error}", file=sys.stderr)
    return 0


def prepare_model(
    source: str, overrides: Sequence[str], registry: Registry, reporter: Reporter
) -> tuple[MultimodalModel, Config]:
    """The model to encode with, and the config whose ``data`` and ``train`` sections say
    how: a run directory's ``best/`` checkpoint and config (overridden), or a config's model
    built and fitted on ``data.train`` exactly as training would (same seed, same order), so
    that the cache entries it writes are the ones that training looks for.

    Raises:
        MmplugError: not a config or a run; ConfigError: an invalid config, no data section,
            or an override of a run's model.
    """
    from mmplug.data.manifest import read_labelled_manifest
    from mmplug.data.pipeline import Pipeline
    from mmplug.model.checkpoint import load_model
    from mmplug.model.config import load_config
    from mmplug.runs.rundir import BEST, RunDir
    from mmplug.training.train import build_for_training, fit_encoders_on_split
    from mmplug.training.trainer import seed_everything

    if Path(source).is_dir():
        run = RunDir.open(source)
        fixed = [word for word in overrides if word.split("=", 1)[0].split(".")[0] == "model"]
        if fixed:
            raise ConfigError(
                [ConfigIssue("model", f"a run's model is its checkpoint's; can't apply {fixed[0]}")]
            )
        run.check_plugins(registry)
        config = _with_data(load_config(run.config_data(), overrides))
        return load_model(run.checkpoint(BEST), registry), config
    config = _with_data(load_config(source, overrides))
    data = config.data
    assert data is not None
    # The steps of training, in its order, so that the encoders (a randomly initialised
    # one, a fitted vocabulary) and so the cache entries' names are those a run gets.
    train_split = read_labelled_manifest(data.train, data.label)
    seed_everything(config.train.seed)
    model, config, _ = build_for_training(config, registry, train_split, data)
    fit_encoders_on_split(model, Pipeline.from_model(model), train_split, data, reporter)
    return model, config


def _with_data(config: Config) -> Config:
    if config.data is None:
        raise ConfigError(
            [
                ConfigIssue(
                    "data", "encode reads data.columns and fits on data.train: add a data section"
                )
            ]
        )
    return config


# -- cache -----------------------------------------------------------------------------------


def _store(folder: str | None) -> Any:
    from mmplug.data.feature_cache import FeatureStore
    from mmplug.files import default_cache_root

    root = default_cache_root() if folder is None else Path(folder).expanduser()
    return FeatureStore(root, limit_bytes=0)


def cmd_cache_info(args: argparse.Namespace) -> int:
    store = _store(args.dir)
    count, size = store.usage()
    print(f"feature cache: {store.folder}")
    print(f"  entries  {count:,}")
    print(f"  size     {_size(size)} ({size:,} bytes)")
    print("  its limit is each run's train.feature_cache_limit_gb (default 20 GB)")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    store = _store(args.dir)
    removed = store.clear()
    print(f"removed {removed:,} entries from {store.folder}")
    return 0


def _size(size: int) -> str:
    """``1.2 MB``: decimal units, as disks are sold (and the limit is given in GB)."""
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
