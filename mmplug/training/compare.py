"""``mmplug compare``: the fused model next to each modality alone, so that nobody has to
guess whether fusion helped.

From one config it trains, into one folder, the fused model (``fused/``) and one model per
modality key with that key's encoder alone (``<key>-only/``), all with the same settings,
then scores each on the test split next to two references:

- **chance**: always answering the training label distribution (:meth:`mmplug.Task.prior`);
- **late average**: the mean of the single-modality models' predictions (probabilities, or
  values), over the modalities each row has: the strong baseline a fused model must match.

A single-modality model keeps the config's fusion when that fusion can be built for one key,
and otherwise (a fusion between modalities, like cross-attention) the head sits on the
encoder alone (core's ``late`` fusion of one key, as it does for a late-fused config);
unimodal heads, gradient modulation and modality dropout have nothing to balance with one
key and are off. The table is printed and saved as ``compare.json`` with a bar chart,
``compare.png``. Rerunning with the same ``--out`` reuses finished runs and continues
unfinished ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmplug.errors import ComponentError, ConfigError, MmplugError
from mmplug.files import staged_file
from mmplug.model.config import ComponentConfig, Config, ConfigSource, load_config
from mmplug.model.multimodal import MultimodalModel
from mmplug.plugins.registry import Registry
from mmplug.runs.evaluation import Predictions, score
from mmplug.runs.predictor import Predictor, load
from mmplug.runs.rundir import LAST, RESULTS
from mmplug.training.diagnostics import training_targets
from mmplug.training.progress import Reporter
from mmplug.training.train import train

COMPARE = "compare.json"
COMPARE_PLOT = "compare.png"
FUSED = "fused"
LATE = "mmplug:late"


@dataclass
class Entry:
    """One line of the table: a trained model or a reference."""

    name: str
    metrics: dict[str, float]
    keys: list[str]
    run: Path | None = None
    note: str = ""


def compare(
    config: ConfigSource | Config,
    overrides: Sequence[str] = (),
    *,
    registry: Registry,
    out: str | Path,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train the fused model and one model per modality, and compare them on the test split.

    Args:
        config: a config with a ``data`` section that has a ``test`` manifest.
        overrides: ``dotted.key=value`` strings applied to the config.
        out: the folder for the runs, ``compare.json`` and ``compare.png``.

    Returns:
        What ``compare.json`` holds.

    Raises:
        ConfigError: the config is invalid, has one modality only, or has no test split.
    """
    reporter = reporter or Reporter()
    config = load_config(config, overrides)
    if config.data is None or config.data.test is None:
        raise ConfigError("compare scores every model on the test split: set data.test")
    keys = sorted(config.model.encoders)
    if len(keys) < 2:
        raise ConfigError(f"compare needs two or more modality keys, the config has {keys}")
    out = Path(out)
    configs = {FUSED: config, **{f"{key} only": _alone(config, key) for key in keys}}
    runs: dict[str, Path] = {}
    for name, chosen in configs.items():
        reporter.log(f"\n== {name}: {' + '.join(sorted(chosen.model.encoders))} ==")
        folder = out / name.replace(" ", "-")
        try:
            runs[name] = _train(chosen, folder, registry, reporter)
        except ComponentError as exc:
            if name == FUSED or not str(exc).startswith("model.fusion"):
                raise
            reporter.log(f"{exc}\nso the head sits on the encoder alone (fusion late)")
            configs[name] = chosen = _head_alone(chosen)
            runs[name] = _train(chosen, folder, registry, reporter)
    report = _report(configs, runs, registry, config.data.test)
    out.mkdir(parents=True, exist_ok=True)
    with staged_file(out / COMPARE) as staging:
        staging.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_comparison(report, out / COMPARE_PLOT)
    for line in table(report):
        reporter.log(line)
    reporter.log(f"wrote {out / COMPARE} and {out / COMPARE_PLOT}")
    return report


def _alone(config: Config, key: str) -> Config:
    """The config of the model with ``key``'s encoder alone, settings otherwise the same."""
    model = config.model.model_copy(
        update={
            "encoders": {key: config.model.encoders[key]},
            "modalities": {k: v for k, v in config.model.modalities.items() if k == key},
            "unimodal_heads": False,
            "modality_dropout": 0.0,
        }
    )
    assert config.data is not None
    columns = {k: v for k, v in config.data.columns.items() if k == key}
    lr = _of_key(config.train.encoder_lr, key)
    warmup = _of_key(config.train.encoder_warmup, key)
    return config.model_copy(
        update={
            "model": model,
            "data": config.data.model_copy(update={"columns": columns}),
            # no unimodal heads: nothing to modulate or weigh (a per-key weight would name
            # keys this model does not have)
            "train": config.train.model_copy(
                update={
                    "modulation": 0.0,
                    "unimodal_loss": 1.0,
                    "encoder_lr": lr,
                    "encoder_warmup": warmup,
                }
            ),
        }
    )


def _of_key(setting: float | dict[str, float] | None, key: str) -> float | dict[str, float] | None:
    """A per-encoder setting for a model with ``key``'s encoder alone."""
    if isinstance(setting, dict):
        return {k: v for k, v in setting.items() if k == key} or None
    return setting


def _head_alone(config: Config) -> Config:
    """``config`` with core's ``late`` fusion: with one key, the head on the encoder alone."""
    late = ComponentConfig.model_validate({"name": LATE})
    return config.model_copy(update={"model": config.model.model_copy(update={"fusion": late})})


def _train(config: Config, out: Path, registry: Registry, reporter: Reporter) -> Path:
    """Train into ``out``; a run already there continues (or, finished, is evaluated again)."""
    if (out / RESULTS).is_file() or (out / LAST).is_dir():
        return train(config, registry=registry, resume=out, reporter=reporter)
    return train(config, registry=registry, out=out, reporter=reporter)


def _report(
    configs: dict[str, Config], runs: dict[str, Path], registry: Registry, test: Path
) -> dict[str, Any]:
    fused = load(runs[FUSED], registry)
    head, task = fused.model.head, fused.task
    metric = primary_metric(configs[FUSED], fused.model)
    predictors = {
        name: fused if name == FUSED else load(run, registry) for name, run in runs.items()
    }
    predictions = {name: predictor.predictions(test) for name, predictor in predictors.items()}
    entries = [
        Entry(
            name,
            _test_metrics(run),
            sorted(configs[name].model.encoders),
            run,
            "" if name == FUSED else _fusion_note(configs[name]),
        )
        for name, run in runs.items()
    ]
    singles = {name: found for name, found in predictions.items() if name != FUSED}
    rows = _common_rows(predictions.values())
    average, targets = late_average(singles, rows)
    late = Entry(
        "late average", score(head, task, average, targets), sorted(configs[FUSED].model.encoders)
    )
    late.note = "mean of the single-modality models' predictions"
    chance = _chance(fused, targets)
    direction = task.direction(metric)
    best_single = _best([e for e in entries if e.name != FUSED], metric, direction)
    fused_entry = entries[0]
    return {
        "metric": metric,
        "direction": direction,
        "rows": len(rows),
        "chance": chance,
        "models": {
            entry.name: {
                "keys": entry.keys,
                "run": str(entry.run) if entry.run else None,
                "note": entry.note,
                "test": entry.metrics,
            }
            for entry in [*entries, late]
        },
        "best_single": best_single.name,
        "fused_minus_best_single": _signed(
            fused_entry.metrics.get(metric, math.nan) - best_single.metrics.get(metric, math.nan),
            direction,
        ),
        "fused_minus_late_average": _signed(
            fused_entry.metrics.get(metric, math.nan) - late.metrics.get(metric, math.nan),
            direction,
        ),
    }


def _signed(difference: float, direction: str) -> float:
    """A difference in the direction where positive is better."""
    return difference if direction == "max" else -difference


def primary_metric(config: Config, model: MultimodalModel) -> str:
    """The metric the table is about: the monitored one when it is a head metric, else the
    head's first."""
    names = list(model.head.metrics())
    monitored = config.train.monitor.removeprefix("val_")
    return monitored if monitored in names else names[0]


def _test_metrics(run: Path) -> dict[str, float]:
    results = json.loads((run / RESULTS).read_text(encoding="utf-8"))
    test = results.get("test")
    if not isinstance(test, dict):
        raise MmplugError(f"{run / RESULTS} has no test results")
    return {k: v for k, v in test.items() if isinstance(v, int | float) and k != "count"}


def _fusion_note(config: Config) -> str:
    name = config.model.fusion.name
    return "head on the encoder alone" if name in (LATE, "late") else f"fusion {name}"


def _common_rows(predictions: Any) -> list[int]:
    """The test rows every model could read (all of them, unless rows were skipped)."""
    found = [set(p.rows) for p in predictions]
    return sorted(set.intersection(*found))


def late_average(singles: dict[str, Predictions], rows: list[int]) -> tuple[Any, Any]:
    """The mean of the single-modality models' predictions for each of ``rows``, over the
    models whose modality the row has (all of them for a row that has none).

    Returns:
        ``(predictions [N, ...], targets [N, ...])``.
    """
    import torch

    stacked, presence, targets = [], [], None
    for found in singles.values():
        order = {row: i for i, row in enumerate(found.rows)}
        index = torch.tensor([order[row] for row in rows])
        stacked.append(found.predictions[index].float())
        (key,) = found.present  # a single-modality model has one key
        presence.append(found.present[key][index])
        targets = found.targets[index] if targets is None else targets
    values = torch.stack(stacked)  # [M, N, ...]
    here = torch.stack(presence)  # [M, N]
    here = here | ~here.any(dim=0, keepdim=True)
    weights = here.float().reshape(*here.shape, *([1] * (values.dim() - 2)))
    average = (values * weights).sum(0) / weights.sum(0)
    assert targets is not None
    return average, targets


def _chance(fused: Predictor, targets: Any) -> dict[str, float] | None:
    """The metrics of always answering the training label distribution."""
    from mmplug.data.manifest import read_labelled_manifest
    from mmplug.data.pipeline import ManifestDataset

    data = fused.data
    manifest = read_labelled_manifest(data.train, data.label)
    dataset = ManifestDataset.from_config(
        manifest, fused.pipeline, data, task=fused.task, missing="absent"
    )
    train_targets = training_targets(dataset)
    prior = None if train_targets is None else fused.task.prior(train_targets)
    if prior is None:
        return None
    outputs = prior.float().expand(targets.shape[0], -1)
    head = fused.model.head
    metrics = score(head, fused.task, head.predict(outputs), targets)
    return {"loss": float(head.loss(outputs, targets)), **metrics}


def _best(entries: list[Entry], metric: str, direction: str) -> Entry:
    def value(entry: Entry) -> float:
        found = entry.metrics.get(metric, math.nan)
        return -math.inf if math.isnan(found) else (found if direction == "max" else -found)

    return max(entries, key=value)


def table(report: dict[str, Any]) -> list[str]:
    """The comparison as lines of text: one row per model and reference."""
    metric, models = report["metric"], report["models"]
    names = sorted({m for model in models.values() for m in model["test"]} - {"loss"})
    names = [metric, *(n for n in names if n != metric)]
    lines = [
        f"\ntest split ({report['rows']} rows); {metric} "
        f"({'higher' if report['direction'] == 'max' else 'lower'} is better):",
        f"  {'model':<22} " + " ".join(f"{n:>10}" for n in names),
    ]
    rows = []
    if report["chance"] is not None:
        rows.append(("chance", report["chance"], "the training label distribution"))
    rows += [(name, model["test"], model["note"]) for name, model in models.items()]
    for name, values, note in rows:
        cells = " ".join(f"{values.get(n, math.nan):>10.4f}" for n in names)
        lines.append(f"  {name:<22} {cells}  {note}".rstrip())
    margin = report["fused_minus_best_single"]
    verdict = "beats" if margin > 0 else "does not beat"
    lines.append(
        f"fused {verdict} the best single modality ({report['best_single']}): {margin:+.4f} "
        f"{metric}; against the late average: {report['fused_minus_late_average']:+.4f}"
    )
    return lines


def plot_comparison(report: dict[str, Any], path: Path) -> None:
    """A bar per model on the primary metric, with chance as a line (PNG, atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = report["metric"]
    names = list(report["models"])
    values = [report["models"][name]["test"].get(metric, math.nan) for name in names]
    figure = Figure(figsize=(7, 0.5 * len(names) + 1.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colors = ["tab:blue" if name == FUSED else "tab:gray" for name in names]
    axes.barh(names[::-1], values[::-1], color=colors[::-1])
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value:.3f}", va="center")
    chance = (report["chance"] or {}).get(metric)
    if chance is not None:
        axes.axvline(chance, color="tab:red", linestyle="--", label=f"chance {chance:.3f}")
        axes.legend(loc="lower right")
    axes.set(xlabel=f"test {metric}", title="fused model vs each modality alone")
    with staged_file(path) as staging:
        figure.savefig(staging, format="png", dpi=100)
