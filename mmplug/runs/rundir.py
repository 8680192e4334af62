"""A run directory: everything ``mmplug train`` writes, and reading it back.

::

    config.yaml      the whole config, fully resolved (every default written out)
    labels.json      the task and its class names, in output order
    plugins.json     the distributions (and versions) whose components the model uses
    metrics.jsonl    one line per epoch: losses, validation metrics, learning rate, time
    results.json     at the end: best epoch, test metrics, rows skipped
    skipped.jsonl    rows that could not be read, with ``data.on_error: skip``
    training.png     per epoch: the losses; every validation metric, the monitored one marked
    best/            the checkpoint with the best monitored value
    last/            the latest checkpoint, which ``--resume`` continues from
    .lock            held by the process that writes the run (:mod:`mmplug.runs.lock`)

Each checkpoint is a saved model (``config.yaml``, ``model.safetensors``, ``fitted/``, see
:mod:`mmplug.model.checkpoint`) plus ``trainer.json`` (epoch, step, best value, early
stopping). Only ``last/``, which a resumed run continues from, also holds the optimizer's
state (``optimizer.safetensors``, twice the size of the weights for AdamW) and the
scheduler's; ``best/`` is for using the model. Every file and checkpoint is written
atomically.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmplug.errors import ConfigError, MmplugError, MmplugWarning
from mmplug.files import existing_dir, write_text
from mmplug.plugins.registry import Registry

if TYPE_CHECKING:
    from mmplug.model.interfaces import Head
    from mmplug.model.tasks import Task

CONFIG = "config.yaml"
LABELS = "labels.json"
PLUGINS = "plugins.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
SKIPPED = "skipped.jsonl"
PLOT = "training.png"
BEST = "best"
LAST = "last"
TRAINER_STATE = "trainer.json"
OPTIMIZER_STATE = "optimizer.safetensors"


@dataclass(frozen=True)
class RunDir:
    """The folder of one training run."""

    path: Path

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run; raises :class:`MmplugError` if ``path`` is not one."""
        run = cls(Path(path))
        if not (run.path / CONFIG).is_file() or not (run.path / LABELS).is_file():
            raise MmplugError(
                f"{run.path} is not a run directory (no {CONFIG} and {LABELS}); "
                "'mmplug train' writes one"
            )
        return run

    def checkpoint(self, name: str = BEST) -> Path:
        """The folder of checkpoint ``best`` or ``last``."""
        found = existing_dir(self.path / name)
        if found is None:
            raise MmplugError(
                f"{self.path} has no {name}/ checkpoint yet (the run ended before its first "
                "epoch did)"
            )
        return found

    # -- config, labels, plugins -----------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        write_text(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def config_data(self) -> dict[str, Any]:
        from mmplug.model.config import read_saved_config

        return read_saved_config(self.path / CONFIG)

    def write_labels(self, task: Task) -> None:
        """Save the task's label space (``labels.json``)."""
        self.write_json(LABELS, task.to_json())

    def task(self, head: Head) -> Task:
        """The label space the run was trained on, read by the head's task.

        Raises:
            MmplugError: ``labels.json`` is damaged, or disagrees with the head's size.
        """
        path = self.path / LABELS
        data = read_json(path)
        task_class = head.task_class()
        if not isinstance(data, dict) or data.get("task", task_class.name) != task_class.name:
            raise MmplugError(
                f"{path} is damaged: it does not describe a {task_class.name} task as the "
                "model's head does; train again (or restore the file from a backup)"
            )
        try:
            task = task_class.from_json(data)
            return task.with_outputs(head.output_dim)
        except (ConfigError, TypeError, ValueError, KeyError) as exc:
            reason = exc.issues[-1].message if isinstance(exc, ConfigError) else str(exc)
            raise MmplugError(
                f"{path} does not fit the model's head ({head.output_dim} outputs): "
                f"{reason[:300]}; it or the checkpoint is damaged: train again (or restore "
                "the file from a backup)"
            ) from None

    def write_plugins(self, distributions: dict[str, str]) -> None:
        import platform

        import torch

        data = {
            "distributions": distributions,
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
        write_text(self.path / PLUGINS, json.dumps(data, indent=2) + "\n")

    def check_plugins(self, registry: Registry) -> None:
        """Every distribution the run used must be loaded; another version is a warning.

        Raises:
            MmplugError: names the missing distributions, with the ``pip install`` line.
        """
        path = self.path / PLUGINS
        if not path.is_file():
            return
        data = read_json(path)
        used = data.get("distributions") if isinstance(data, dict) else None
        if not isinstance(used, dict) or not all(isinstance(v, str) for v in used.values()):
            raise MmplugError(f"{path} is damaged (no distributions and versions); {REWRITE}")
        installed = {spec.distribution: spec.version for spec in registry.components()}
        missing = sorted(dist for dist in used if dist not in installed)
        if missing:
            names = ", ".join(f"{dist} {used[dist]}" for dist in missing)
            raise MmplugError(
                f"{self.path} was trained with components of {names}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed (or failed to load; see "
                f"'mmplug plugins'): pip install {' '.join(missing)}"
            )
        for dist, version in sorted(used.items()):
            if installed[dist] != version:
                warnings.warn(
                    f"{self.path} was trained with {dist} {version}; {installed[dist]} is "
                    "installed, and its components may behave differently",
                    MmplugWarning,
                    stacklevel=3,
                )

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self) -> list[dict[str, Any]]:
        """The lines of ``metrics.jsonl``, oldest first."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        lines = []
        for number, line in enumerate(_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise MmplugError(
                    f"{path}, line {number}, is damaged ({exc}); --resume rewrites it from "
                    "last/'s copy of the history"
                ) from None
            if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
                raise MmplugError(f"{path}, line {number}, is damaged (no epoch)")
            lines.append(data)
        return lines

    def write_json(self, name: str, data: Any) -> None:
        write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        write_text(self.path / name, "".join(json.dumps(row) + "\n" for row in rows))


#: What to do about a damaged file that ``mmplug train --resume`` writes again.
REWRITE = "'mmplug train --resume' on the run writes it again"


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MmplugError(f"{path} is damaged (not UTF-8 text at byte {exc.start})") from None


def read_json(path: Path) -> Any:
    """A JSON file a run wrote, or a one-line :class:`MmplugError` naming it when it is
    missing or damaged (truncated, not JSON, not UTF-8)."""
    if not path.is_file():
        raise MmplugError(f"{path} is missing")
    try:
        return json.loads(_text(path))
    except ValueError as exc:
        raise MmplugError(f"{path} is damaged (not valid JSON: {exc})") from None
