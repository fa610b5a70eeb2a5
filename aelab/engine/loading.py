"""Rebuild a trained model from the config its checkpoint carries."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.engine.build import build_model
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint
from aelab.engine.options import TrainerOptions
from aelab.errors import UserError
from aelab.models.base import Autoencoder
from aelab.nets.fastpath import FAST_PATHS

if TYPE_CHECKING:
    from aelab.data.base import DataModule


@dataclass
class LoadedRun:
    """A trained run opened: the one object behind every command that reads a run and behind `aelab.load_run`."""

    run_dir: Path
    model: Autoencoder
    config: DictConfig  # the resolved training config
    data: dict[str, Any]  # what the training data really was (name, shape, classes, ...)
    checkpoint: dict[str, Any]

    @property
    def step(self) -> int:
        """The training step of the checkpoint (step-dependent weights such as a KL warm-up, as trained)."""
        return int(self.checkpoint.get("progress", {}).get("step", 0))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data["shape"])

    @cached_property
    def standardization(self) -> dict[str, list] | None:
        """A table run's training-split statistics: stored in the checkpoint, or (runs saved before they were
        stored) recomputed from the run's own training table with its split seed, which gives the same numbers.
        Data given to a run is scaled with these, never refitted on itself."""
        stored = self.data.get("standardization")
        source = str(OmegaConf.select(self.config.data, "source._target_", default=""))
        if stored is not None or not source.endswith("load_csv"):
            return stored
        from aelab.data import build_data

        try:
            return build_data(self.config.data, torch.device("cpu")).standardization
        except UserError as error:
            raise UserError("run", f"the checkpoint holds no table statistics and its training table cannot be read "
                            f"again ({error.problem})", "a run trained by this version of aelab") from None

    def build_data(self, data_config: DictConfig | None = None, device: torch.device | None = None) -> DataModule:
        """A dataset (data_config, else the run's own) split as in training and scaled with the run's statistics."""
        from aelab.data import build_data

        return build_data(data_config if data_config is not None else self.config.data,
                          device or self.model.device, standardization=self.standardization)


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
