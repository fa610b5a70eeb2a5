"""What is measured on a split, independent of where it is written.

`measure` computes one report (scalars, histograms, pictures) from the model and a split; training calls it on
the validation split each epoch and `aelab eval` on the split it evaluates. TensorBoard, metrics.json and the
terminal table are sinks for the same report, so `logger=none` changes what is shown, never what is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from aelab.data.base import Split
from aelab.engine.device import autocast
from aelab.models.base import Autoencoder
from aelab.schema import SHARED_KEYS, shared_keys_read
from aelab.viz.epoch_report import PictureOptions, Report

__all__ = ["PictureOptions", "Report", "measure", "mean_terms", "monitor_of", "hparams_of"]

DIAGNOSTIC_EXAMPLES = 5000  # the family's diagnostics (active units, KL per dimension, ...) use this many examples


@torch.no_grad()
def mean_terms(model: Autoencoder, split: Split, batch_size: int, step: int = 0,
               amp_dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Per-example mean of every loss term over the split (tensors on the device: read them once)."""
    was_training = model.training
    model.eval()
    sums: dict[str, Tensor] = {}
    count = 0
    for batch in split.batches(batch_size):
        with autocast(batch.x.device, amp_dtype):
            terms = model.losses(batch, step)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * len(batch)
        count += len(batch)
    model.train(was_training)
    return {name: total / max(count, 1) for name, total in sums.items()}


def read_scalars(terms: dict[str, Tensor]) -> dict[str, float]:
    """Device scalars -> floats in one transfer, plus their sum as `loss`."""
    values = torch.stack([torch.as_tensor(v).float().cpu() for v in terms.values()]).tolist() if terms else []
    out = dict(zip(terms, values))
    out["loss"] = sum(values)
    return out


@torch.no_grad()
def measure(model: Autoencoder, split: Split, *, step: int, batch_size: int, amp_dtype: torch.dtype | None = None,
            pictures: PictureOptions | None = None, class_names: list[str] | None = None,
            read: Callable[[dict[str, Tensor]], dict[str, float]] = read_scalars) -> Report:
    """The loss terms (at the training step's weights), the family's diagnostics and, if asked, the pictures.

    `read` turns the device sums into floats (training passes its own: it averages over ranks and stops on
    non-finite values).
    """
    was_training = model.training
    report = Report(scalars=read(mean_terms(model, split, batch_size, step, amp_dtype)))
    declared = model.metric_directions()
    report.directions = {name: declared.get(name, "min") for name in report.scalars}  # loss terms: minimised
    model.eval()
    try:
        found = model.diagnostics(split.head(min(len(split), DIAGNOSTIC_EXAMPLES)))
        report.scalars.update(found.scalars)
        report.directions.update({name: declared[name] for name in found.scalars if name in declared})
        report.histograms.update(found.histograms)
        if pictures is not None:
            from aelab.viz.views import render, split_pictures

            report.images.update({name: render(p) for name, p in found.images.items()})
            split_pictures(report, model, split, pictures, class_names)
    finally:
        model.train(was_training)
    return report


def monitor_of(monitor: str | None, monitor_mode: str, model: Autoencoder) -> tuple[str, str]:
    """The validation metric that says "a better model" (trainer.monitor, else the family's own) and whether
    lower or higher is better (trainer.monitor_mode, else the metric's own direction)."""
    from aelab.metrics.directions import direction

    name = monitor or f"val/{model.monitor}"
    mode = monitor_mode or "auto"
    if mode == "auto":  # the family's word on its own names first, then the name's, then "lower is better"
        declared = model.metric_directions()
        term = name.split("/", 1)[-1]
        mode = (declared[term] if term in declared else direction(name)) or "min"
    return str(name), str(mode)


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The hyperparameters a run is compared by (TensorBoard's HParams tab)."""
    shared = [k for k in SHARED_KEYS if k in shared_keys_read(cfg.model)]  # a knob the family ignores is no hparam
    keys = (*shared, "seed", "epochs", "batch_size", "lr")
    out: dict[str, Any] = {k: cfg[k] for k in keys if k in cfg}
    out["model"] = cfg.model._target_.rsplit(".", 1)[-1]
    out["arch"] = cfg.arch._target_.rsplit(".", 1)[-1]
    return out
