"""Objects from config nodes via `_target_`, with constructor mistakes reported as user errors."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from aelab.errors import UserError


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs); a UserError raised inside passes through, other failures name `key`."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, UserError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        detail = str(cause if cause is not None else exc).strip().splitlines()
        raise UserError(key, detail[0] if detail else "cannot be built", f"check {key}.* in the config") from None


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int | None):
    """The family named by cfg.model._target_, on the encoder/decoder builders of cfg.arch."""
    from aelab.models.base import Autoencoder

    arch = build(cfg.arch, "arch")
    model = build(cfg.model, "model", arch=arch, input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, Autoencoder):
        raise UserError("model", f"{cfg.model._target_} is not an aelab Autoencoder")
    return model
