"""One training loop for every family: it steps the phases a model declares and logs the terms it returns."""

from __future__ import annotations

import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from aelab.data.base import DataModule, Split
from aelab.engine.build import build
from aelab.engine.checkpoint import checkpoint_path, save_checkpoint
from aelab.engine.device import autocast, autocast_dtype
from aelab.engine.evaluate import mean_terms
from aelab.engine.progress import EpochProgress
from aelab.errors import UserError
from aelab.models.base import Autoencoder
from aelab.viz.logger import Logger


class DivergedError(UserError):
    pass


class Trainer:
    def __init__(self, model: Autoencoder, data: DataModule, cfg: DictConfig, *, device: torch.device,
                 logger: Logger, run_dir: Path, seed: int, extra_state: dict[str, Any] | None = None) -> None:
        self.model, self.data, self.cfg, self.device = model.to(device), data, cfg, device
        self.logger, self.run_dir, self.extra_state = logger, Path(run_dir), extra_state or {}
        self.phases = model.phases()
        make_optimizer = build(cfg.optimizer, "trainer.optimizer")
        base_lr = make_optimizer.keywords.get("lr")
        self.optimizers = [
            make_optimizer(p.parameters) if p.lr_scale == 1.0 or base_lr is None
            else make_optimizer(p.parameters, lr=base_lr * p.lr_scale)
            for p in self.phases
        ]
        make_scheduler = build(cfg.scheduler, "trainer.scheduler") if cfg.get("scheduler") else None
        self.schedulers = [make_scheduler(o) for o in self.optimizers] if make_scheduler else []
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        # opt-in: compilation costs seconds up front and pays off on long runs
        self.loss_fn = torch.compile(model.losses) if cfg.get("compile") else model.losses
        self.data_rng = torch.Generator().manual_seed(seed)  # shuffling order; checkpointed
        self.step, self.epoch, self.best = 0, 0, math.inf
        self.epoch_seconds: list[float] = []
        self.last_metrics: dict[str, float] = {}

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        epochs, bs, log_every = int(self.cfg.epochs), int(self.cfg.batch_size), int(self.cfg.log_every)
        limit = self.cfg.get("limit_batches")
        n_batches = math.ceil(len(self.data.train) / bs)
        n_batches = min(n_batches, int(limit)) if limit else n_batches
        with EpochProgress(epochs) as progress:
            for epoch in range(self.epoch + 1, epochs + 1):
                self.model.train()
                progress.start_epoch(epoch, n_batches)
                sums: dict[str, torch.Tensor] = {}
                seen, window_start, window_images, t0 = 0, time.perf_counter(), 0, time.perf_counter()
                for i, batch in enumerate(self.data.train.batches(bs, shuffle=True, generator=self.data_rng)):
                    if i >= n_batches:
                        break
                    terms = self.train_step(batch)
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0) + value
                    seen += 1
                    window_images += len(batch)
                    if self.step % log_every == 0 or i == n_batches - 1:
                        means = self._read({k: v / seen for k, v in sums.items()})  # the one host sync per interval
                        ips = window_images / max(time.perf_counter() - window_start, 1e-9)
                        self.logger.scalars({**{f"train/{k}": v for k, v in means.items()},
                                             "train/lr": self.optimizers[0].param_groups[0]["lr"],
                                             "train/images_per_s": ips}, self.step)
                        progress.update(i + 1, means["loss"], ips)
                        window_start, window_images = time.perf_counter(), 0
                self.epoch_seconds.append(time.perf_counter() - t0)
                for scheduler in self.schedulers:
                    scheduler.step()
                self.epoch = epoch
                self._end_epoch(self._read({k: v / max(seen, 1) for k, v in sums.items()}), progress)
        return self.summary()

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        """One step of every phase; returns the detached terms each phase minimised."""
        self.step += 1
        logged: dict[str, torch.Tensor] = {}
        for phase, optimizer in zip(self.phases, self.optimizers):
            with autocast(self.device, self.amp_dtype):
                terms = self.loss_fn(batch, self.step)
            chosen = terms if phase.terms is None else {k: terms[k] for k in phase.terms}
            loss = sum(chosen.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(phase.parameters, float(self.cfg.grad_clip))
            optimizer.step()
            logged.update({k: v.detach().float() for k, v in chosen.items()})
        return logged

    def evaluate(self, split: Split) -> dict[str, float]:
        """Mean of every loss term over a split (per image), plus their sum as `loss`."""
        means = mean_terms(self.model, split, int(self.cfg.eval_batch_size), self.step, self.amp_dtype)
        return self._read(means)

    # ---- bookkeeping ----------------------------------------------------------------------
    def _read(self, means: dict[str, torch.Tensor]) -> dict[str, float]:
        """Device means -> floats in one transfer, refusing non-finite terms; adds their sum as `loss`."""
        names = list(means)
        values = torch.stack([torch.as_tensor(means[k]) for k in names]).tolist() if names else []
        means = dict(zip(names, values))
        for name, value in means.items():
            if not math.isfinite(value):
                raise DivergedError(
                    f"loss term '{name}'", f"became non-finite ({value}) at step {self.step}, epoch {self.epoch + 1}",
                    "lower lr, set trainer.grad_clip=1.0, or lower beta; the last good checkpoint is kept",
                )
        means["loss"] = sum(values)
        return means

    def _end_epoch(self, train: dict[str, float], progress: EpochProgress) -> None:
        val = self.evaluate(self.data.val)
        self.last_metrics = {**{f"train/{k}": v for k, v in train.items()}, **{f"val/{k}": v for k, v in val.items()}}
        self.logger.scalars({f"val/{k}": v for k, v in val.items()} | {"epoch": self.epoch}, self.step)
        self.logger.views(self.model, self.data, self.step, self.epoch)
        improved = val["loss"] < self.best
        self.best = min(self.best, val["loss"])
        self.save("last")
        if improved:
            self._copy_checkpoint("last", "best")
        seconds = self.epoch_seconds[-1]
        progress.epoch_done(
            f"epoch {self.epoch}/{int(self.cfg.epochs)}  train/loss {train['loss']:.4f}  "
            f"val/loss {val['loss']:.4f}{' *' if improved else ''}  {seconds:.1f}s"
        )

    def summary(self) -> dict[str, float]:
        out = dict(self.last_metrics)
        out["val/best_loss"] = self.best
        out["epochs"], out["steps"] = self.epoch, self.step
        if self.epoch_seconds:
            out["time/epoch_s"] = statistics.median(self.epoch_seconds)
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
            "progress": {"step": self.step, "epoch": self.epoch, "best": self.best,
                         "epoch_seconds": list(self.epoch_seconds)},
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        progress = state["progress"]
        self.step, self.epoch, self.best = int(progress["step"]), int(progress["epoch"]), float(progress["best"])
        self.epoch_seconds = list(progress.get("epoch_seconds", []))
        torch.set_rng_state(state["rng"]["torch"])
        self.data_rng.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save(self, which: str) -> None:
        save_checkpoint(self.state_dict(), checkpoint_path(self.run_dir, which))

    def _copy_checkpoint(self, src: str, dst: str) -> None:
        source, target = checkpoint_path(self.run_dir, src), checkpoint_path(self.run_dir, dst)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
