"""`aelab train`: compose a family, an arch and a dataset, and fit them with the shared engine."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab.commands._common import remove_if_only_hydra, run_command, save_json
from aelab.sweep.threads import apply_threads
from aelab.config_check import check_train
from aelab.engine.options import defaults_for
from aelab.errors import UserError


def resume_config(stored_raw: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The stored (unresolved) config of a run, with the value overrides given on this command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.create(stored_raw)
    for key, value in defaults_for(cfg.trainer).items():  # a run stored before a trainer key existed
        cfg.trainer[key] = value
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        current = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if current == "__absent__" or isinstance(current, DictConfig) or override.is_delete():
            raise UserError(key, "cannot be changed when resuming a run", "value keys such as epochs=20 or lr=1e-4")
        OmegaConf.update(cfg, key, override.value(), merge=False)
    return cfg


def run(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume) one run in run_dir; returns the final metrics."""
    import torch

    from aelab.engine.build import build, build_trainer
    from aelab.engine.checkpoint import load_latest
    from aelab.engine.device import resolve_device
    from aelab.engine.options import TrainerOptions
    from aelab.engine.distributed import setup_distributed
    from aelab.engine.host import prepare_host
    from aelab.engine.measure import hparams_of
    from aelab.viz.logger import NullLogger

    check_train(cfg)
    run_dir = Path(run_dir)
    resumed = None
    if cfg.get("resume"):
        resumed, _ = load_latest(Path(cfg.resume).expanduser(), key="resume")
        cfg = resume_config(resumed["config_raw"], overrides or [])
        check_train(cfg)
    threads = apply_threads(cfg.get("threads", "auto"))
    options = TrainerOptions.from_config(cfg.trainer)
    # before any parallel op starts torch's worker threads: they inherit the denormal flush (aelab/engine/host.py)
    prepare_host(options.flush_denormals, options.malloc_keep_mb)
    torch.manual_seed(int(cfg.seed))
    dist, device = setup_distributed(options.strategy, resolve_device(cfg.device))
    trainer, data = build_trainer(cfg, device, run_dir, dist)
    if resumed is not None:
        trainer.load_state_dict(resumed)
    trainer.logger = (build(cfg.logger, "logger", log_dir=str(run_dir), start_step=trainer.step) if dist.is_main
                      else NullLogger())  # one set of logs per run
    try:
        metrics = trainer.fit()
        metrics["data"] = data.name
        metrics["threads"] = threads  # torch CPU threads this job used (see `threads`)
        if dist.is_main:
            metrics["world_size"] = dist.world
            save_json(metrics, run_dir / "metrics.json", what="final metrics")
            trainer.logger.hparams(hparams_of(cfg), {k: v for k, v in metrics.items() if k.startswith("val/")})
        dist.wait_for_all()  # then every rank closes together (only on success: a failed rank is torchrun's to stop)
    except BaseException:
        with contextlib.suppress(OSError):  # the first failure (a full disk at a checkpoint) is the one to report
            trainer.logger.close()
        raise
    else:
        trainer.logger.close()
    finally:
        dist.close()
    if dist.is_main:
        _report(run_dir, metrics, data)
    return metrics


def _report(run_dir: Path, metrics: dict[str, Any], data) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"final metrics ({data.name})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(k for k in metrics if not isinstance(metrics[k], dict)):  # directions: for aelab report
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for note in data.notes:
        console.print(f"[yellow]note:[/] {note}")
    # soft_wrap: the paths must stay copy-pasteable on narrow terminals and in logs
    console.print(f"run directory: {run_dir}", soft_wrap=True, highlight=False)
    console.print(f"TensorBoard:   tensorboard --logdir {run_dir}", soft_wrap=True, highlight=False)


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="train")
def main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    created = run_dir / hc.output_subdir if hc.output_subdir else run_dir / "__none__"
    metrics = run_command(lambda: run(cfg, run_dir, list(hc.overrides.task)),
                          cleanup=lambda: remove_if_only_hydra(run_dir, created),
                          interrupted=lambda: _resume_hint(run_dir))
    if run_dir.name.startswith("aelab-rank") and run_dir.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(run_dir, ignore_errors=True)  # Hydra's files of a torchrun rank other than 0
    return objective_value(cfg.get("objective"), metrics)


def objective_value(key: str | None, metrics: dict[str, Any] | None) -> Any:
    """What a sweeper gets back: the metrics, or with `objective` set (search=optuna) that one number.

    A failed job (or a non-finite value) returns None, not NaN: the Optuna sweeper marks a trial whose
    value is not a float as failed and goes on, while a NaN makes it raise and end the whole study.
    """
    if not key:
        return metrics
    value = (metrics or {}).get(key)
    if metrics is not None and not isinstance(value, (int, float)):
        logging.getLogger(__name__).warning(f"objective: {key} is not a final metric (one of: {', '.join(metrics)})")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _resume_hint(run_dir: Path) -> str:
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return f"continue from the last checkpoint with: aelab train resume={run_dir}"
    return "no checkpoint had been saved yet"
