"""Rebuild a trained model from the config its checkpoint carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.engine.build import build_model
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.engine.options import TrainerOptions
from aelab.errors import UserError
from aelab.models.base import Autoencoder
from aelab.nets.fastpath import FAST_PATHS


@dataclass
class LoadedRun:
    run_dir: Path
    model: Autoencoder
    config: DictConfig  # the resolved training config
    data: dict[str, Any]  # what the training data really was (name, shape, classes, ...)
    checkpoint: dict[str, Any]


def load_trained(run_dir: str | Path, which: str = "last", device: torch.device | None = None,
             key: str = "run") -> LoadedRun:
    run_dir = Path(run_dir).expanduser()
    state = load_checkpoint(checkpoint_path(run_dir, which), key=key)
    try:
        config = OmegaConf.create(state["config"])
        info = state["data"]
        model = build_model(config, tuple(info["shape"]), info["num_classes"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(key, f"checkpoint in {run_dir} does not match its config: {reason}") from None
    model.to(device or torch.device("cpu")).eval()
    options = TrainerOptions.from_config(config.trainer)  # the kernels the run measured itself with
    FAST_PATHS.follow_run(options.fast_paths, options.forced_fast_paths(), state.get("fast_paths"))
    return LoadedRun(run_dir, model, config, info, state)
