"""The training loop: epochs of forward, loss, backward and update, with checkpoints.

:class:`Trainer` takes a built model and its datasets (see :func:`mmplug.training.train.train`
for how they are prepared) and runs AdamW with warmup and cosine decay, gradient
accumulation and clipping, mixed precision, validation with the head's metrics each epoch,
early stopping, and a ``best/`` and ``last/`` checkpoint after each epoch.

Reproducibility: every epoch reseeds torch, Python and numpy (and the loader's shuffling and
workers) from ``(seed, epoch)``, so a run resumed from ``last/`` replays the remaining epochs
exactly as an uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmplug.data.feature_cache import plan_for_settings
from mmplug.data.pipeline import ManifestDataset, Skipped, make_loader
from mmplug.errors import MmplugError
from mmplug.model.checkpoint import WEIGHTS_FILE, save_model, verify_saved
from mmplug.model.devices import autocast
from mmplug.model.multimodal import ModelOutput, MultimodalModel
from mmplug.model.sections import DataConfig, TrainConfig
from mmplug.model.tasks import Task
from mmplug.runs.evaluation import Evaluation, evaluate_loader
from mmplug.runs.rundir import (
    BEST,
    LABELS,
    LAST,
    METRICS,
    OPTIMIZER_STATE,
    PLOT,
    RESULTS,
    SKIPPED,
    TRAINER_STATE,
    RunDir,
    read_json,
)
from mmplug.training.balance import FUSED, loss_weights, modulation, scale_gradients
from mmplug.training.diagnostics import Watch
from mmplug.training.optim import (
    group_schedules,
    jsonable,
    load_optimizer,
    make_optimizer,
    save_optimizer,
)
from mmplug.training.progress import Reporter, format_metrics, plot_history


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and (when installed) numpy's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        return
    np.random.seed(seed % 2**32)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: different epochs and different seeds don't share streams."""
    return (seed * 1_000_003 + epoch) % 2**63


@dataclass
class TrainerState:
    """What a checkpoint records besides the weights; JSON in ``trainer.json``."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs the epochs of one run and writes its checkpoints and metrics."""

    def __init__(
        self,
        model: MultimodalModel,
        task: Task,
        settings: TrainConfig,
        datasets: Mapping[str, ManifestDataset],
        run: RunDir,
        reporter: Reporter,
        device: torch.device,
        monitor: str,
        mode: str,
        data: DataConfig,
    ) -> None:
        self.model = model.to(device)
        self.task = task
        self.settings = settings
        self.datasets = datasets
        self.run = run
        self.reporter = reporter
        self.device = device
        self.monitor = monitor
        self.mode = mode
        self.data = data
        self.state = TrainerState()
        self.history: list[dict[str, Any]] = []
        self.optimizer = make_optimizer(model, settings)
        per_epoch = math.ceil(len(self._loader("train", 0)) / settings.grad_accumulation)
        self.steps_per_epoch = per_epoch
        self.total_steps = settings.max_steps or per_epoch * settings.epochs
        self.epochs = math.ceil(self.total_steps / per_epoch)
        self.schedules = group_schedules(self.optimizer.param_groups, settings, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedules)
        self.scaler = torch.amp.grad_scaler.GradScaler(
            device.type, enabled=settings.precision == "fp16"
        )
        self._skipped: dict[tuple[str, int], Skipped] = {}
        self.watch = Watch(model, task, datasets["train"], monitor)
        self.features = plan_for_settings(self.model, settings, device)
        for dataset in datasets.values():
            dataset.features = self.features.cache

    def _loader(self, split: str, epoch: int) -> torch.utils.data.DataLoader[Any]:
        train = split == "train"
        size = (
            self.settings.batch_size
            if train
            else (self.settings.eval_batch_size or self.settings.batch_size)
        )
        return make_loader(
            self.datasets[split],
            batch_size=size,
            train=train,
            num_workers=self.data.num_workers,
            seed=epoch_seed(self.settings.seed, epoch),
        )

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, folder: Path) -> None:
        """Continue from a ``last/`` checkpoint (the model's weights are already loaded)."""
        meta = read_json(folder / TRAINER_STATE)
        state = self.state = TrainerState(**meta["state"])
        fresh = [(g["initial_lr"], g["weight_decay"]) for g in self.optimizer.param_groups]
        load_optimizer(self.optimizer, folder, OPTIMIZER_STATE, meta["optimizer"])
        self.scheduler.load_state_dict(meta["scheduler"])
        # The moments carry over; learning rates and decay follow the (maybe changed) settings.
        for group, (lr, decay) in zip(self.optimizer.param_groups, fresh, strict=True):
            group["initial_lr"], group["weight_decay"] = lr, decay
        self.scheduler.base_lrs = [lr for lr, _ in fresh]
        for group, lr, schedule in zip(
            self.optimizer.param_groups, self.scheduler.base_lrs, self.schedules, strict=True
        ):
            group["lr"] = lr * schedule(state.step)
        if meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])
        patience = self.settings.patience
        state.stopped_early = patience is not None and state.bad_epochs >= patience
        # the checkpoint's own history (checksummed with it); runs saved before it kept one
        # rebuild it from metrics.jsonl, which is rewritten from it either way
        history = meta.get("history")
        if history is None:
            history = [line for line in self.run.metrics() if line["epoch"] <= state.epoch]
        self.history = history
        self.run.write_jsonl(METRICS, self.history)
        for row in state.skipped:
            self._skipped[(row["manifest"], row["row"])] = Skipped(**row)
        self._repair_best()
        self.reporter.log(f"resuming {self.run.path} after epoch {state.epoch}")

    def _repair_best(self) -> None:
        """``last/`` is saved before ``best/``: a run killed between the two has a ``last/``
        whose weights are the best ones while ``best/`` is older. Save them as ``best/``."""
        state = self.state
        if state.best_epoch != state.epoch:
            return
        try:
            best = self.run.checkpoint(BEST)
            verify_saved(best)
            saved = read_json(best / TRAINER_STATE)
        except MmplugError:  # missing or damaged: rebuilt from last/
            saved = {}
        if saved.get("state", {}).get("epoch") != state.epoch:
            self._save(BEST, optimizer=False)

    def _save(self, name: str, *, optimizer: bool) -> None:
        self.state.skipped = [s.to_json() for s in self._skipped.values()]

        def extra(folder: Path) -> None:
            meta: dict[str, Any] = {"state": self.state.__dict__, "history": self.history}
            if optimizer:
                meta["optimizer"] = save_optimizer(self.optimizer, folder, OPTIMIZER_STATE)
                meta["scheduler"] = jsonable(self.scheduler.state_dict())
                meta["scaler"] = (
                    jsonable(self.scaler.state_dict()) if self.scaler.is_enabled() else {}
                )
            (folder / TRAINER_STATE).write_text(json.dumps(meta, indent=2) + "\n")

        # best/ is only ever saved from the weights last/ holds (right after it, or when a
        # resumed run repairs it): link them rather than write the same bytes twice.
        same = self.run.path / LAST / WEIGHTS_FILE if name == BEST else None
        save_model(
            self.model,
            self.run.path / name,
            extra=extra,
            weights_from=same,
            depends_on=[self.run.path / LABELS],
        )

    # -- training ------------------------------------------------------------------------

    def fit(self) -> None:
        """Run the remaining epochs, then evaluate the best checkpoint on the test split."""
        state = self.state
        if state.epoch >= self.epochs or state.stopped_early or state.step >= self.total_steps:
            self.reporter.log(f"{self.run.path}: training already finished at epoch {state.epoch}")
        else:
            self._describe()
        started = time.perf_counter()
        while state.epoch < self.epochs and not state.stopped_early:
            if state.step >= self.total_steps:
                break
            self._epoch(state.epoch + 1)
        self._finish(time.perf_counter() - started)

    def _describe(self) -> None:
        sizes = ", ".join(f"{len(ds)} {split}" for split, ds in self.datasets.items())
        self.reporter.log(f"run: {self.run.path}")
        self.reporter.log(self.model.describe())
        self.reporter.log(
            f"rows: {sizes}; device {self.device}, precision {self.settings.precision}; "
            f"{self.steps_per_epoch} steps per epoch, {self.total_steps} in all; "
            f"monitoring {self.monitor} ({self.mode})"
        )
        for line in self.features.describe():
            self.reporter.log(line)

    def _epoch(self, epoch: int) -> None:
        started = time.perf_counter()
        seed_everything(epoch_seed(self.settings.seed, epoch))
        trained = self._train_epoch(epoch)
        line: dict[str, Any] = {
            "epoch": epoch,
            "step": self.state.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            **self._encoder_lrs(),
            **trained,
        }
        if "val" in self.datasets:
            line.update(self._evaluate("val", epoch).flat("val"))
            if self.settings.reliance and len(self.model.keys) > 1:
                for key in self.model.keys:
                    blanked = self._evaluate("val", epoch, blank=key)
                    line.update(blanked.flat(f"val_without_{key}"))
        line["seconds"] = round(time.perf_counter() - started, 2)
        if self.features.cache is not None:
            self.features.cache.evict_if_grown()
        self._check_finite(line, epoch)
        self.history.append(line)
        self.run.write_jsonl(METRICS, self.history)
        value = float(line[self.monitor])
        state = self.state
        state.epoch = epoch
        improved = self._better(value, state.best)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, epoch, 0
        else:
            state.bad_epochs += 1
        patience = self.settings.patience
        state.stopped_early = patience is not None and state.bad_epochs >= patience
        # last/ first: resuming from it can always rebuild best/ (see _repair_best)
        self._save(LAST, optimizer=True)
        if improved:
            self._save(BEST, optimizer=False)
        metric = self.monitor.removeprefix("val_").removeprefix("train_")
        shown = {
            k: v
            for k, v in line.items()
            if k not in ("epoch", "lr")
            and (not k.startswith("val_without_") or k.endswith(f"_{metric}"))
        }
        self.reporter.log(f"epoch {epoch}/{self.epochs}  {format_metrics(shown)}")
        for warning in self.watch.check(line):
            self.reporter.log(f"warning: {warning}")
        if state.stopped_early:
            self.reporter.log(
                f"stopping early: {self.monitor} has not improved for {patience} epochs"
            )

    def _check_finite(self, line: dict[str, Any], epoch: int) -> None:
        """Stop before an epoch whose losses, monitored metric or weights are not finite is
        saved: a NaN must never become ``best/`` (nor ``last/``, which resuming continues)."""
        names = dict.fromkeys(("train_loss", "val_loss", self.monitor))
        bad = [f"{n} {line[n]}" for n in names if n in line and not math.isfinite(line[n])]
        if not bad:
            finite = [torch.isfinite(p).all() for p in self.model.parameters()]
            if finite and not bool(torch.stack(finite).all()):  # one device sync, not one each
                bad = ["the weights"]
        if bad:
            kept = f"epoch {epoch - 1}" if epoch > 1 else "nothing yet"
            raise MmplugError(
                f"{' and '.join(bad)}: training diverged at epoch {epoch} (not finite); "
                f"nothing of this epoch was saved (last/ and best/ hold {kept}); try a lower "
                "train.lr, train.grad_clip, or precision fp32"
            )

    def _encoder_lrs(self) -> dict[str, float]:
        """``lr_<key>``: each encoder's learning rate now, where the settings give encoders
        their own (``encoder_lr``, ``encoder_warmup``); ``lr`` is the fusion's and heads'.
        An encoder's two groups (decayed or not) share one rate and schedule."""
        settings = self.settings
        if settings.encoder_lr is None and settings.encoder_warmup is None:
            return {}
        return {
            f"lr_{group['key']}": group["lr"]
            for group in self.optimizer.param_groups
            if group.get("key") is not None
        }

    def _better(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return True
        if math.isnan(value):
            return False
        return value < best if self.mode == "min" else value > best

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns ``train_loss`` (the fused loss) and, for
        unimodal heads, each one's loss and gradient modulation coefficient (means)."""
        model, settings, device = self.model, self.settings, self.device
        model.train()
        weights = self._loss_weights()
        loader = self._loader("train", epoch)
        batches = len(loader)
        accumulation = settings.grad_accumulation
        total, count, passes = 0.0, 0, 0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        found, computed = 0, 0  # the feature cache's hits and misses
        with self.reporter.bar(f"epoch {epoch}/{self.epochs}", batches) as advance:
            for index, loaded in enumerate(loader):
                loaded.raise_fatal()
                self._note_skipped(loaded.skipped)
                group_start = index - index % accumulation
                group_size = min(accumulation, batches - group_start)
                if loaded.batch is not None and loaded.targets is not None:
                    passes += 1
                    for known in loaded.batch.encoded.values():
                        found += known.found
                        computed += len(known.entries)
                    batch, targets = loaded.batch.to(device), loaded.targets.to(device)
                    with autocast(device, settings.precision):
                        output = model(batch)
                    loss = model.head.loss(output.logits.float(), targets)
                    if not torch.isfinite(loss):
                        raise MmplugError(
                            f"the training loss became {float(loss)} at epoch {epoch}, step "
                            f"{self.state.step}; try a lower train.lr or precision fp32"
                        )
                    objective = self._balance(output, targets, weights, sums, counts)
                    if weights[FUSED] or not isinstance(objective, torch.Tensor):
                        objective = weights[FUSED] * loss + objective
                    self.scaler.scale(objective / group_size).backward()  # type: ignore[no-untyped-call]
                    total += float(loss.detach()) * batch.size
                    count += batch.size
                    advance(loss=total / count)
                else:
                    advance()
                if (index + 1) % accumulation == 0 or index + 1 == batches:
                    if passes:  # a group whose rows were all skipped has no gradients
                        self._step(model)
                    passes = 0
                    if self.state.step >= self.total_steps:
                        break
        if not count:
            raise MmplugError(
                f"no row of {self.datasets['train'].manifest.path} could be read in epoch "
                f"{epoch}; see the skipped rows above"
            )
        logged = {"train_loss": total / count, **{k: sums[k] / counts[k] for k in sorted(sums)}}
        if settings.unimodal_loss == "auto" and model.unimodal_heads is not None:
            logged |= {f"loss_weight{f'_{k}' if k else ''}": w for k, w in weights.items()}
        if found or computed:
            self.reporter.log(
                f"feature cache, epoch {epoch}: {found} of {found + computed} outputs found, "
                f"{computed} to encode and write"
            )
        return logged

    def _loss_weights(self) -> dict[str, float]:
        """This epoch's weight of each head's loss (:data:`FUSED` and each key)."""
        if self.model.unimodal_heads is None:
            return {FUSED: 1.0}
        return loss_weights(self.settings.unimodal_loss, self.model.keys, self.history)

    def _balance(
        self,
        output: ModelOutput,
        targets: torch.Tensor,
        weights: dict[str, float],
        sums: dict[str, float],
        counts: dict[str, int],
    ) -> torch.Tensor | float:
        """The unimodal heads' part of the objective (their losses times ``weights``), with
        gradient modulation hooked in; adds each key's loss and coefficient to
        ``sums``/``counts`` (per batch)."""
        losses = self.model.unimodal_losses(output, targets)
        if not losses:
            return 0.0
        values = {key: float(loss.detach()) for key, loss in losses.items()}
        coefficients = modulation(values, self.settings.modulation)
        scale_gradients(output.features, coefficients)
        logged = {f"train_loss_{key}": value for key, value in values.items()}
        if self.settings.modulation:
            logged |= {f"modulation_{key}": value for key, value in coefficients.items()}
        for name, value in logged.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
        # a head weighted 0 gets no gradient at all (not zeros that weight decay would act on)
        return sum(weights[key] * loss for key, loss in losses.items() if weights[key])

    def _step(self, model: nn.Module) -> None:
        if self.settings.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1

    def _evaluate(
        self, split: str, epoch: int, *, confusion: bool = False, blank: str | None = None
    ) -> Evaluation:
        loader = self._loader(split, epoch)
        what = f"  {split}" + (f" without {blank}" if blank else "")
        with self.reporter.bar(what, len(loader)) as advance:
            result = evaluate_loader(
                self.model,
                loader,
                self.device,
                self.task,
                precision=self.settings.precision,
                confusion=confusion,
                progress=advance,
                blank=blank,
            )
        self._note_skipped(result.skipped)
        if not result.count:
            raise MmplugError(f"no row of {self.datasets[split].manifest.path} could be read")
        return result

    def _note_skipped(self, skipped: Sequence[Skipped]) -> None:
        for row in skipped:
            self._skipped.setdefault((row.manifest, row.row), row)

    def _finish(self, seconds: float) -> None:
        """Evaluate the best weights on the test split; write results, skipped rows, plot."""
        from safetensors.torch import load_model as load_weights

        state = self.state
        results: dict[str, Any] = {
            "best_epoch": state.best_epoch,
            "monitor": self.monitor,
            "best": state.best,
            "epochs": state.epoch,
            "steps": state.step,
            "stopped_early": state.stopped_early,
        }
        if "test" in self.datasets and state.best_epoch is not None:
            folder = self.run.checkpoint(BEST)
            verify_saved(folder)
            load_weights(self.model, str(folder / WEIGHTS_FILE), strict=False)
            test = self._evaluate("test", 0, confusion=True)
            results["test"] = {"loss": test.loss, **test.metrics, "count": test.count}
            if test.confusion is not None:
                results["test"]["confusion"] = test.confusion
            shown = format_metrics({"loss": test.loss, **test.metrics})
            self.reporter.log(f"test (best epoch {state.best_epoch}): {shown}")
        skipped = [row.to_json() for _, row in sorted(self._skipped.items())]
        results["skipped"] = len(skipped)
        results["seconds"] = round(seconds, 2)
        if skipped:
            self.run.write_jsonl(SKIPPED, skipped)
            self.reporter.log(
                f"skipped {len(skipped)} row(s) that could not be read; see "
                f"{self.run.path / SKIPPED}"
            )
        best = [line for line in self.history if line["epoch"] == state.best_epoch]
        for warning in self.watch.conclude(best[0]) if best else []:
            self.reporter.log(f"warning: {warning}")
        self.run.write_json(RESULTS, results)
        if self.history:
            plot_history(self.history, self.monitor, self.run.path / PLOT)
        self.reporter.log(f"done: {self.run.path}")
