"""A small Python API for notebooks: open a trained run, or train one, with the same configs as the CLI.

    import aelab
    result = aelab.train(["model=vae", "data=mnist5k", "latent_dim=2", "epochs=5"])
    run = aelab.load_run(result.run_dir)
    z = run.encode(x)                       # (N, D) codes of float inputs shaped like the training data
    x_hat = run.reconstruct(x)
    drawn = run.sample(16)                  # families with a prior
    test = run.data.test                    # the training data, split as in training (built on first use)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    import torch

    from aelab.data.base import DataModule
    from aelab.models.base import Autoencoder


class Run:
    """A trained run: its model (on `device`, in eval mode), its stored config and its training data."""

    def __init__(self, path: str | Path, ckpt: str = "last", device: str = "cpu") -> None:
        from aelab.engine.device import resolve_device
        from aelab.engine.loading import load_trained as load

        self.device = resolve_device(device)
        self._loaded = load(path, ckpt, self.device)
        self.run_dir: Path = self._loaded.run_dir
        self.model: Autoencoder = self._loaded.model
        self.config: DictConfig = self._loaded.config  # the resolved training config
        self.checkpoint: dict[str, Any] = self._loaded.checkpoint
        self.data_info: dict[str, Any] = self._loaded.data  # what the training data really was

    @cached_property
    def data(self) -> DataModule:
        """The training data as training split it (tables scaled with the run's statistics, as the commands scale
        them: LoadedRun.standardization, recomputed for runs saved before they were stored)."""
        return self._loaded.build_data(device=self.device)

    def _no_grad(self, fn, *args):
        import torch

        with torch.no_grad():
            return fn(*args)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # (N, ...) -> (N, D)
        """Deterministic codes (the posterior mean for VAE-type families)."""
        return self._no_grad(self.model.encode, x.to(self.device), None if y is None else y.to(self.device))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # (N, D) -> (N, ...)
        """The mean reconstruction in data space of codes (not the logits the model's decode returns)."""
        model = self.model
        return self._no_grad(lambda a, b: model.likelihood.mean(model.decode(a, b)), z.to(self.device),
                             None if y is None else y.to(self.device))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._no_grad(self.model.reconstruct, x.to(self.device), None if y is None else y.to(self.device))

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws from the family's prior (a one-line UserError for families without one)."""
        return self._no_grad(self.model.sample, int(n), None if y is None else y.to(self.device))

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, model={type(self.model).__name__}, data={self.data_info.get('name')!r})"


def load_run(path: str | Path, ckpt: str = "last", device: str = "cpu") -> Run:
    """Open a run directory written by `aelab train` (or `aelab.train`)."""
    from aelab.config_check import check_run_dir
    from aelab.engine.options import CHECKPOINTS
    from aelab.errors import UserError

    if ckpt not in CHECKPOINTS:
        raise UserError("ckpt", f"got {ckpt!r}", " | ".join(CHECKPOINTS))
    check_run_dir({"run": str(path)}, "run", required=True)
    return Run(path, ckpt, device)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]


def compose_train(overrides: list[str]) -> tuple[DictConfig, Path]:
    """The train config of these overrides, composed as `aelab train` composes it, and its run directory."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from aelab.sweep.rundirs import claims_released  # (and the resolvers the configs use)

    was_initialized = GlobalHydra.instance().is_initialized()
    if not was_initialized:
        initialize_config_module(config_module="aelab.conf", version_base="1.3")
    try:
        with claims_released():  # one run per call: the next call claims a new directory
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.choices.model} in the run dir name
            run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir")).absolute()
    finally:
        if not was_initialized:
            GlobalHydra.instance().clear()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def train(overrides: list[str] | None = None) -> TrainResult:
    """Train one run from Python with the CLI's configs: the same run directory naming (outputs/<date>/<time>_<model>
    relative to the working directory, or hydra.run.dir=...), config files in <run>/.hydra, the final metrics."""
    from omegaconf import OmegaConf

    from aelab.commands.train import run
    from aelab.errors import UserError
    from aelab.files import atomic_path
    from aelab.precheck import compose_checked

    overrides = list(overrides or [])
    if any(a in ("-m", "--multirun") for a in overrides):
        raise UserError("overrides", "aelab.train runs one training run", "call it once per setting, or use the CLI's -m")
    compose_checked("train", overrides)  # the CLI's checks: one-line UserErrors before any work
    cfg, run_dir = compose_train(overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("resume"):  # as Hydra writes them for the CLI (a resumed run keeps its own)
        for name, node in (("config.yaml", cfg), ("overrides.yaml", OmegaConf.create(overrides))):
            with atomic_path(run_dir / ".hydra" / name, what="the run's config") as tmp:
                OmegaConf.save(node, tmp)
    metrics = run(cfg, run_dir, overrides)
    return TrainResult(run_dir, metrics)
