"""The model of a composed config (the family of cfg.model on the arch of cfg.arch), and its trainer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from aelab.errors import UserError
from aelab.instantiate import build

__all__ = ["build", "build_model", "build_trainer"]


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int | None):
    """The family named by cfg.model._target_, on the encoder/decoder builders of cfg.arch."""
    from aelab.models.base import Autoencoder

    arch = build(cfg.arch, "arch")
    model = build(cfg.model, "model", arch=arch, input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, Autoencoder):
        raise UserError("model", f"{cfg.model._target_} is not an aelab Autoencoder")
    return model


def build_trainer(cfg: DictConfig, device, run_dir: str | Path, dist=None):
    """The data, the model and the engine of a composed train config; the logger is the caller's to set."""
    from omegaconf import OmegaConf

    from aelab.data import build_data
    from aelab.engine.trainer import Trainer
    from aelab.viz.logger import NullLogger

    data = build_data(cfg.data, device)
    model = build_model(cfg, data.shape, data.num_classes)
    state = {"config": OmegaConf.to_container(cfg, resolve=True), "config_raw": OmegaConf.to_container(cfg, resolve=False),
             "data": data.describe()}  # what rebuilds the model, and the data it really saw
    trainer = Trainer(model, data, cfg.trainer, device=device, logger=NullLogger(), run_dir=Path(run_dir),
                      seed=int(cfg.seed), extra_state=state, dist=dist)
    return trainer, data
