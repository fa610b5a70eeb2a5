"""One training loop for every family: it steps the phases a model declares and logs the terms it returns."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.data.base import DataModule, Split
from aelab.engine.checkpoint import checkpoint_path, save_checkpoint
from aelab.engine.device import autocast, autocast_dtype
from aelab.engine.distributed import Distributed
from aelab.engine.eager_optim import eager_step, skip_dynamo_import
from aelab.engine.options import TrainerOptions
from aelab.engine.precision import (choose_bf16_matmuls, choose_cpu_bf16, cpu_has_bf16_dot, keep_outputs_fp32,
                                   step_has_exact_blocks)
from aelab.engine.progress import EpochProgress, seconds_since_launch
from aelab.engine.measure import Report, measure, monitor_of
from aelab.engine.stop import StopSignals, TrainingInterrupted
from aelab.errors import UserError
from aelab.files import atomic_path
from aelab.instantiate import build
from aelab.models.base import Autoencoder
from aelab.nets.fastpath import FAST_PATHS
from aelab.nets.precision import bf16_matmuls
from aelab.viz.logger import Logger

log = logging.getLogger(__name__)

REMEDIES = "lower lr, set trainer.grad_clip=1.0, lower beta, or trainer.skip_nonfinite=N; the last good checkpoint is kept"


class DivergedError(UserError):
    pass


def fused_if_available(make_optimizer: functools.partial, device: torch.device) -> functools.partial:
    """Ask for the fused (one kernel per step) implementation where the optimizer has one and the
    config leaves it unset: on a small model the ~10 per-tensor passes of foreach Adam cost a third
    as much as the matmuls (measured on the benchmark's MLP VAE, 2 CPU cores)."""
    func = getattr(make_optimizer, "func", None)
    if func is None or "fused" in make_optimizer.keywords or device.type not in ("cpu", "cuda"):
        return make_optimizer
    try:
        accepts = "fused" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return make_optimizer
    return functools.partial(make_optimizer, fused=True) if accepts else make_optimizer


class Trainer:
    def __init__(self, model: Autoencoder, data: DataModule, cfg: DictConfig, *, device: torch.device,
                 logger: Logger, run_dir: Path, seed: int, extra_state: dict[str, Any] | None = None,
                 dist: Distributed | None = None) -> None:
        self.model, self.data, self.device = model.to(device), data, device
        self.options = options = TrainerOptions.from_config(cfg)  # every setting the loop reads, typed
        self.logger, self.run_dir, self.extra_state = logger, Path(run_dir), extra_state or {}
        self.dist = dist or Distributed()
        self.phases = model.phases()
        self.ddp = self.dist.wrap(self.model, several_phases=len(self.phases) > 1)
        FAST_PATHS.configure(options.fast_paths, options.forced_fast_paths(), timing=not self.dist.enabled)
        eager = not options.compile
        if eager:
            skip_dynamo_import()  # 1.8 s of start-up an eager run does not need: see eager_optim
        configured = build(OmegaConf.create(options.optimizer), "trainer.optimizer")
        # the lr is read before fused_if_available wraps it: Hydra's deferred target is not a functools.partial, so
        # the wrapper's keywords hold only `fused`, and read after, every phase's lr_scale was silently ignored
        base_lr = configured.keywords.get("lr")
        make_optimizer = fused_if_available(configured, device)
        self.optimizers = [
            make_optimizer(p.parameters) if p.lr_scale == 1.0 or base_lr is None
            else make_optimizer(p.parameters, lr=base_lr * p.lr_scale)
            for p in self.phases
        ]
        if eager:
            for optimizer in self.optimizers:
                eager_step(optimizer)
        make_scheduler = build(OmegaConf.create(options.scheduler), "trainer.scheduler") if options.scheduler else None
        self.schedulers = [make_scheduler(o) for o in self.optimizers] if make_scheduler else []
        self.amp_dtype = autocast_dtype(options.precision, device)
        # auto on a CPU with bf16 dot products: bf16 if timing this model's step says so, at the first step
        self.precision_pending = (options.precision == "auto" and device.type == "cpu" and bool(self.phases)
                                  and cpu_has_bf16_dot())
        self._fp32_hooks = keep_outputs_fp32(self.model) if self.amp_dtype is not None else []
        self.bf16_matmuls = False  # an fp32 step with oneDNN's bf16 matmuls: chosen by timing where bf16 pays
        # fp16 needs its gradients scaled so small ones do not flush to zero; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        # opt-in: compilation costs seconds up front and pays off on long runs
        self.loss_fn = torch.compile(model.losses) if options.compile else model.losses
        self.seed = seed
        self.data_rng = torch.Generator().manual_seed(seed)  # shuffling order; checkpointed
        self.monitor, self.monitor_mode = monitor_of(options.monitor, options.monitor_mode, model)
        self.step, self.epoch = 0, 0
        self.best, self.best_epoch = (math.inf if self.monitor_mode == "min" else -math.inf), 0
        self.stopped_early = False
        self.batch_in_epoch = 0  # > 0 only in a checkpoint written mid-epoch
        self.epoch_start_rng = self.data_rng.get_state()  # replays the epoch's permutation on resume
        self.partial_sums: dict[str, float] = {}  # the epoch's running loss sums at a mid-epoch checkpoint
        skip = options.skip_nonfinite
        if skip and self.dist.enabled:  # ranks skipping different batches would fall out of step
            raise UserError("trainer.skip_nonfinite", "is not available with distributed training", "null")
        self.skip_budget, self.skipped = (int(skip) if skip else None), 0
        self.stop = StopSignals()
        self.epoch_seconds: list[float] = []
        self.val_seconds: list[float] = []
        self.last_metrics: dict[str, float] = {}
        self.directions: dict[str, str | None] = {}
        self.started = False

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, epochs: int | None = None) -> dict[str, float]:
        """Train until trainer.epochs (or `epochs`: a benchmark or test going on for more); resumes mid-epoch if the
        loaded state stopped there."""
        if epochs is not None:
            self.options = dataclasses.replace(self.options, epochs=int(epochs))
        epochs, bs = self.options.epochs, self.options.batch_size
        limit = self.options.limit_batches
        n_batches = math.ceil(len(self.data.train) / bs)
        n_batches = min(n_batches, int(limit)) if limit else n_batches
        if self.epoch == 0 and self.batch_in_epoch == 0:  # closed-form families (PCA) fit here; others: no-op
            self.model.fit_closed_form(self.data.train, self.options.eval_batch_size)
        self._check_monitor()
        with EpochProgress(epochs, quiet=not self.dist.is_main) as progress, StopSignals() as self.stop:
            for epoch in range(self.epoch + 1, epochs + 1):
                train = self._train_epoch(epoch, n_batches, bs, progress) if self.phases else self._evaluate_epoch()
                self.epoch = epoch
                self._end_epoch(train, progress)
                if self._stop_requested():  # the epoch checkpoint was just written
                    raise TrainingInterrupted(self.stop.requested or "SIGTERM", self.step)
                patience = self.options.early_stopping
                if patience and self.epoch - self.best_epoch >= int(patience):
                    self.stopped_early = True
                    log.info("early stopping after epoch %d: %s has not improved for %d epochs (best %.6g at epoch %d)",
                             self.epoch, self.monitor, int(patience), self.best, self.best_epoch)
                    progress.epoch_done(f"early stopping: {self.monitor} has not improved since epoch {self.best_epoch}")
                    break
        return self.summary()

    def _train_epoch(self, epoch: int, n_batches: int, bs: int, progress: EpochProgress) -> dict[str, float]:
        self.model.train()
        log_every, save_every = self.options.log_every, self.options.checkpoint_every
        if self.batch_in_epoch == 0:
            self.epoch_start_rng = self.data_rng.get_state()
        else:  # resuming mid-epoch: replay this epoch's permutation from where it stopped
            self.data_rng.set_state(self.epoch_start_rng)
        # Device sums of the current logging interval; each interval's means are logged (train/*) and folded
        # into the epoch's host-side sums, so the epoch mean needs no second accumulation on the device.
        epoch_sums: dict[str, float] = dict(self.partial_sums)
        window: dict[str, torch.Tensor] = {}
        window_batches = 0
        progress.start_epoch(epoch, n_batches)
        t0 = window_start = time.perf_counter()
        window_images, checked = 0, self.step

        def flush() -> dict[str, float]:
            """Read the interval's means (the one host sync per interval) and fold them into the epoch's sums."""
            nonlocal window, window_batches, checked
            means = self._read(window, max(window_batches, 1), since=checked)
            for name, value in means.items():
                if name != "loss":
                    epoch_sums[name] = epoch_sums.get(name, 0.0) + value * window_batches
            window, window_batches, checked = {}, 0, self.step
            return means
        batches = self.data.train.batches(bs, shuffle=True, generator=self.data_rng, start=self.batch_in_epoch,
                                          shard=self.dist.shard)
        for i, batch in enumerate(batches, start=self.batch_in_epoch):
            if i >= n_batches:
                break
            for name, value in self.train_step(batch).items():
                window[name] = window.get(name, 0) + value
            window_batches += 1
            if not self.started:  # start-up cost a user waits through (imports, data, model): see train.log
                self.started = True
                log.info("first training step finished, %.2f s after launch", seconds_since_launch())
            self.batch_in_epoch = i + 1
            window_images += len(batch)
            if self.step % log_every == 0 or i == n_batches - 1:
                means = flush()
                ips = window_images / max(time.perf_counter() - window_start, 1e-9)
                self.logger.scalars({**{f"train/{k}": v for k, v in means.items()},
                                     "train/lr": self.optimizers[0].param_groups[0]["lr"],
                                     "train/images_per_s": ips}, self.step)
                progress.update(i + 1, means["loss"], ips)
                window_start, window_images = time.perf_counter(), 0
            stopping = self._stop_requested()
            if stopping or (save_every and self.step % int(save_every) == 0 and i < n_batches - 1):
                flush()  # never checkpoint a diverged model
                self.partial_sums = dict(epoch_sums)
                self.save("last")
                if stopping:
                    raise TrainingInterrupted(self.stop.requested or "SIGTERM", self.step)
        self.epoch_seconds.append(time.perf_counter() - t0)
        for scheduler in self.schedulers:
            scheduler.step()
        flush()
        done = max(self.batch_in_epoch, 1)
        means = {name: total / done for name, total in epoch_sums.items()}
        means["loss"] = sum(v for k, v in means.items() if not k.startswith("grad_norm_"))
        self.batch_in_epoch, self.partial_sums = 0, {}
        return means

    def _evaluate_epoch(self) -> dict[str, float]:
        """An epoch of a model with nothing to optimise (no phases): the training split's terms."""
        t0 = time.perf_counter()
        train = self.evaluate(self.data.train).scalars
        self.epoch_seconds.append(time.perf_counter() - t0)
        return train

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        """One step of every phase; returns the detached terms each phase minimised."""
        self.step += 1
        if self.precision_pending:
            self._choose_precision(batch)
        with bf16_matmuls(self.bf16_matmuls):
            return self._phases_step(batch)

    def _phases_step(self, batch) -> dict[str, torch.Tensor]:
        """train_step's phases, each a forward, backward and optimizer step."""
        logged: dict[str, torch.Tensor] = {}
        for phase, optimizer in zip(self.phases, self.optimizers):
            loss_fn = phase.loss or self.loss_fn  # a phase may compute only its own terms
            with autocast(self.device, self.amp_dtype):
                # through DDP's forward, so the backward pass averages gradients over the ranks
                terms = self.ddp(batch, self.step, loss_fn) if self.ddp is not None else loss_fn(batch, self.step)
            chosen = terms if phase.terms is None else {k: terms[k] for k in phase.terms}
            loss = sum(chosen.values())
            optimizer.zero_grad(set_to_none=True)
            if self.skip_budget is not None and not torch.isfinite(loss):  # opt-in: costs a sync per step
                self._skip_batch(phase.name, chosen)
                continue
            if self.scaler is None:
                loss.backward()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(optimizer)  # clip and log the true gradients
            if self.options.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(phase.parameters, float(self.options.grad_clip))
                logged[f"grad_norm_{phase.name}"] = norm.detach()
            if self.scaler is None:
                optimizer.step()
            else:
                self.scaler.step(optimizer)  # skipped (and the scale lowered) when the fp16 gradients overflowed
            logged.update({k: v.detach().float() for k, v in chosen.items()})
        if self.scaler is not None:
            self.scaler.update()
        return logged

    def _choose_precision(self, batch) -> None:
        """trainer.precision=auto on a CPU with bf16 dot products: bf16 if this model's step is faster so, then whether
        by autocast or by oneDNN's bf16 matmuls in an fp32 step (each timed once per machine, or the run's own choice
        when resuming; aelab/engine/precision.py)."""
        self.precision_pending = False

        def step(way: str) -> None:  # the step as it runs, every phase with its update (timing puts all back)
            self._step_as(way, batch)

        if not choose_cpu_bf16(self.model, step, len(batch), self.optimizers):
            return
        # which way to bf16: an eager fp32 step with oneDNN's bf16 matmuls, or autocast (a compiled step keeps it, and
        # so does a step with exact blocks in any phase, whose backward matmuls only autocast leaves in fp32)
        losses = dict.fromkeys(phase.loss or self.loss_fn for phase in self.phases)  # phases may share one
        exact = not self.options.compile and any(
            step_has_exact_blocks(self.model, lambda fn=fn: fn(batch, self.step)) for fn in losses)
        if exact:
            log.info("bf16 autocast: this model's step has full_precision() blocks, whose backward matmuls an fp32 "
                     "step with bf16 matmuls would round")
        self.bf16_matmuls = (not self.options.compile and not exact
                             and choose_bf16_matmuls(self.model, step, len(batch), self.optimizers))
        if not self.bf16_matmuls:
            self.amp_dtype = torch.bfloat16
            self._fp32_hooks = keep_outputs_fp32(self.model)

    def _step_as(self, way: str, batch) -> None:
        """One step of every phase computed `way` (fp32, autocast or matmuls: an fp32 step with oneDNN's bf16
        matmuls), for the precision timing; the run's own settings are left as they were."""
        amp, skipped = self.amp_dtype, self.skipped
        self.amp_dtype = torch.bfloat16 if way == "autocast" else None
        try:
            with bf16_matmuls(way == "matmuls"):
                self._phases_step(batch)
        finally:
            self.amp_dtype, self.skipped = amp, skipped

    def _skip_batch(self, phase: str, terms: dict[str, torch.Tensor]) -> None:
        self.skipped += 1
        bad = [k for k, v in terms.items() if not torch.isfinite(v)]
        log.warning("step %d: non-finite %s in phase '%s'; batch skipped (%d of %d allowed)",
                    self.step, ", ".join(bad), phase, self.skipped, self.skip_budget)
        if self.skipped > self.skip_budget:
            raise DivergedError(f"loss term '{bad[0]}'", f"non-finite in more than {self.skip_budget} batches "
                                f"(last at step {self.step})", REMEDIES)

    def evaluate(self, split: Split, pictures=None) -> Report:
        """The report of a split: mean loss terms (plus their sum as `loss`), the family's diagnostics and,
        when a sink shows them, pictures (aelab/engine/measure.py)."""
        # On a GPU validation keeps the run's autocast; on the CPU it is a small share of the epoch and runs in
        # fp32, so that `aelab eval` of the run (fp32) reports what training reported.
        amp = self.amp_dtype if self.device.type != "cpu" else None
        return measure(self.model, split, step=self.step, batch_size=self.options.eval_batch_size,
                       amp_dtype=amp, pictures=pictures, class_names=self.data.class_names,
                       read=lambda sums: self._read(sums, 1))

    @torch.no_grad()
    def _check_monitor(self) -> None:
        """Refuse a monitor this run never measures before the first step, not after the first epoch."""
        if self.monitor in ("val/loss", "train/loss"):
            return
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            was_training = self.model.training
            self.model.eval()
            head = self.data.val.head(min(len(self.data.val), 64))
            names = {*self.model.losses(head, self.step), "loss", *self.model.diagnostics(head).scalars}
            self.model.train(was_training)
        known = sorted(f"{split}/{name}" for split in ("val", "train") for name in names)
        if self.monitor not in known:
            raise UserError("trainer.monitor", f"{self.monitor} is not measured by this run",
                            "one of: " + ", ".join(known))

    # ---- bookkeeping ----------------------------------------------------------------------
    def _read(self, sums: dict[str, torch.Tensor], count: int, since: int | None = None) -> dict[str, float]:
        """Device sums / count -> floats in one transfer; a non-finite term stops training, named."""
        names = [k for k in sums if not k.startswith("grad_norm_")]
        values = self.dist.mean(torch.stack([torch.as_tensor(sums[k]) for k in sums]).div(count)).tolist() if sums else []
        means = dict(zip(sums, values))
        for name, value in means.items():
            if not math.isfinite(value):
                what = f"gradient of phase '{name[10:]}'" if name.startswith("grad_norm_") else f"loss term '{name}'"
                when = f"between steps {since + 1} and {self.step}" if since is not None and since + 1 < self.step \
                    else f"at step {self.step}"
                raise DivergedError(what, f"became non-finite ({value}) {when}, epoch {self.epoch + 1}", REMEDIES)
        means["loss"] = sum(means[k] for k in names)
        return means

    def _end_epoch(self, train: dict[str, float], progress: EpochProgress) -> None:
        # Validation and pictures draw their own fixed noise: what is logged, and how
        # much, must not change the training run's random stream.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + 1)
            pictures = self.logger.picture_options(self.epoch) if self.dist.is_main else None
            if pictures is not None and getattr(self.data, "factors", None) is not None:
                pictures = dataclasses.replace(pictures, traversal=True)  # known factors: show what each code moves
            report = self.evaluate(self.data.val, pictures)
        self.val_seconds.append(time.perf_counter() - t0)  # validation, diagnostics and pictures: the epoch's overhead
        val = report.scalars
        self.last_metrics = {**{f"train/{k}": v for k, v in train.items()}, **report.prefixed("val")}
        self.directions = report.prefixed_directions("train", "val")  # metrics.json carries the family's word
        self.logger.report(report, "val", self.step)
        self.logger.scalars({"train/epoch": self.epoch}, self.step)
        value = self.last_metrics[self.monitor]
        improved = value < self.best if self.monitor_mode == "min" else value > self.best
        if improved:
            self.best, self.best_epoch = value, self.epoch
        self.save("last")
        if improved:
            self._copy_checkpoint("last", "best")
        seconds = self.epoch_seconds[-1]
        shown = f"  {self.monitor} {value:.4f}" if self.monitor != "val/loss" else ""
        progress.epoch_done(
            f"epoch {self.epoch}/{self.options.epochs}  train/loss {train['loss']:.4f}  "
            f"val/loss {val['loss']:.4f}{shown}{' *' if improved else ''}  {seconds:.1f}s"
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.last_metrics)
        out["monitor"], out["monitor_mode"] = self.monitor, self.monitor_mode
        out["monitor_best"], out["monitor_best_epoch"] = self.best, self.best_epoch
        out["stopped_early"] = self.stopped_early
        out["directions"] = {k: v for k, v in self.directions.items() if k in out}
        out["epochs"], out["steps"] = self.epoch, self.step
        if self.epoch_seconds:
            out["time/epoch_s"] = statistics.median(self.epoch_seconds)
        if self.val_seconds:
            out["time/val_s"] = statistics.median(self.val_seconds)
        # the epochs with their validation, and this process from launch (imports, data and start-up included): what
        # a budget such as "MIG 0.2 within the hour" is measured in
        out["time/train_s"] = sum(self.epoch_seconds) + sum(self.val_seconds)
        out["time/wall_s"] = seconds_since_launch()
        return out

    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            **self.extra_state,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "progress": {"step": self.step, "epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch,
                         "monitor": self.monitor,
                         "epoch_seconds": list(self.epoch_seconds), "val_seconds": list(self.val_seconds),
                         "batch_in_epoch": self.batch_in_epoch,
                         "partial_sums": dict(self.partial_sums), "skipped": self.skipped},
            "rng": rng,
            "epoch_start_rng": self.epoch_start_rng,
            "fast_paths": FAST_PATHS.record(),  # the kernels chosen by timing are part of the run: see fastpath
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        progress = state["progress"]
        self.step, self.epoch = int(progress["step"]), int(progress["epoch"])
        if progress.get("monitor", "val/loss") == self.monitor:  # a resume that changes the monitor starts afresh
            self.best, self.best_epoch = float(progress["best"]), int(progress.get("best_epoch", self.epoch))
        self.epoch_seconds = list(progress.get("epoch_seconds", []))
        self.val_seconds = list(progress.get("val_seconds", []))
        self.batch_in_epoch = int(progress.get("batch_in_epoch", 0))
        self.partial_sums = dict(progress.get("partial_sums", {}))
        self.skipped = int(progress.get("skipped", 0))
        self.epoch_start_rng = state.get("epoch_start_rng", self.data_rng.get_state())
        FAST_PATHS.adopt(state.get("fast_paths"))  # compute as the interrupted run did, whatever the load now
        torch.set_rng_state(state["rng"]["torch"])
        self.data_rng.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def _stop_requested(self) -> bool:
        """A signal reached this rank (or, in distributed training, any rank)."""
        return self.dist.any(self.stop.requested is not None, self.device) if self.dist.enabled \
            else self.stop.requested is not None

    def save(self, which: str) -> None:
        if not self.dist.is_main:  # one set of checkpoints per run
            return
        save_checkpoint(self.state_dict(), checkpoint_path(self.run_dir, which), keep_previous=which == "last")

    def _copy_checkpoint(self, src: str, dst: str) -> None:
        if not self.dist.is_main:
            return
        source, target = checkpoint_path(self.run_dir, src), checkpoint_path(self.run_dir, dst)
        with atomic_path(target, what="best checkpoint") as tmp:
            shutil.copyfile(source, tmp)
