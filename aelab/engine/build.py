"""The model of a composed config: the family of cfg.model on the arch of cfg.arch."""

from __future__ import annotations

from omegaconf import DictConfig

from aelab.errors import UserError
from aelab.instantiate import build

__all__ = ["build", "build_model"]


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int | None):
    """The family named by cfg.model._target_, on the encoder/decoder builders of cfg.arch."""
    from aelab.models.base import Autoencoder

    arch = build(cfg.arch, "arch")
    model = build(cfg.model, "model", arch=arch, input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, Autoencoder):
        raise UserError("model", f"{cfg.model._target_} is not an aelab Autoencoder")
    return model
