"""Averages over a whole split, shared by validation during training and `aelab eval`."""

from __future__ import annotations

import torch

from aelab.data.base import Split
from aelab.engine.device import autocast
from aelab.models.base import Autoencoder


@torch.no_grad()
def mean_terms(model: Autoencoder, split: Split, batch_size: int, step: int = 0,
               amp_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Per-image mean of every loss term over the split (tensors on the device: read them once)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in split.batches(batch_size):
        with autocast(batch.x.device, amp_dtype):
            terms = model.losses(batch, step)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * len(batch)
        count += len(batch)
    model.train(was_training)
    return {name: total / max(count, 1) for name, total in sums.items()}


@torch.no_grad()
def reconstruction_metrics(model: Autoencoder, split: Split, batch_size: int) -> dict[str, float]:
    """Likelihood-free reconstruction quality of the mean reconstruction (clean input)."""
    model.eval()
    bce = mse = psnr = 0.0
    count = 0
    for batch in split.batches(batch_size):
        recon = model.reconstruct(batch.x, batch.y).float().clamp(0, 1)
        target = batch.x.float().clamp(0, 1)
        per_pixel = (recon - target).pow(2).flatten(1).mean(1)  # (B,)
        bce += torch.nn.functional.binary_cross_entropy(recon, target, reduction="sum").item()
        mse += per_pixel.sum().item()
        psnr += (10 * torch.log10(1.0 / per_pixel.clamp_min(1e-10))).sum().item()
        count += len(batch)
    n = max(count, 1)
    return {"recon_bce": bce / n, "recon_mse": mse / n, "psnr": psnr / n}
