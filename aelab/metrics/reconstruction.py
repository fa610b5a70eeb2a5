"""Reconstruction quality: BCE / MSE per example, PSNR and SSIM (torchmetrics), PSNR of denoised inputs."""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import Split
from aelab.models.base import Autoencoder


def ssim_kernel(height: int, width: int) -> tuple[int, float]:
    """The usual 11-pixel Gaussian window (sigma 1.5), shrunk to the largest odd size small images allow."""
    size = min(11, min(height, width) - (1 - min(height, width) % 2))
    return size, 1.5 * size / 11


def image_scores(recon: Tensor, target: Tensor) -> dict[str, Tensor]:  # (B, C, H, W) in [0, 1] -> {name: (B,)}
    """Per-image PSNR (dB, data range 1) and SSIM of reconstructions against their targets."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    size, sigma = ssim_kernel(*target.shape[-2:])
    psnr = peak_signal_noise_ratio(recon, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(recon, target, data_range=1.0, kernel_size=size, sigma=sigma,
                                               reduction="none")
    return {"psnr": psnr.clamp_max(100.0), "ssim": ssim}  # a perfect copy has infinite PSNR: capped at 100 dB


@torch.no_grad()
def reconstruction_quality(model: Autoencoder, split: Split, batch_size: int, images: bool) -> dict[str, float]:
    """Mean per example of BCE and squared error (summed over pixels), and for images PSNR and SSIM."""
    sums: dict[str, float] = {}
    count = 0
    for batch in split.batches(batch_size):
        recon = model.reconstruct(batch.x, batch.y).float()
        target = batch.x.float()
        scores = {"recon_mse": (recon - target).pow(2).flatten(1).sum(1)}  # (B,)
        if images:  # pixels in [0, 1]: BCE of the mean reconstruction, PSNR, SSIM
            recon, target = recon.clamp(0, 1), target.clamp(0, 1)
            bce = torch.nn.functional.binary_cross_entropy(recon, target, reduction="none")
            scores["recon_bce"] = bce.flatten(1).sum(1)
            scores.update(image_scores(recon, target))
        for name, values in scores.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        count += len(batch)
    return {name: total / max(count, 1) for name, total in sums.items()}


@torch.no_grad()
def denoising_psnr(model: Autoencoder, split: Split, batch_size: int, levels: list[float],
                   seed: int = 0) -> dict[str, float]:
    """PSNR of reconstructions from inputs with Gaussian noise of each std (clipped to [0, 1]) against the
    clean images, next to the PSNR of the noisy inputs themselves (what denoising has to beat)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    generator = torch.Generator().manual_seed(seed)  # the same corruption for every run compared
    out: dict[str, float] = {}
    for level in levels:
        denoised = noisy = 0.0
        count = 0
        for batch in split.batches(batch_size):
            clean = batch.x.float().clamp(0, 1)
            noise = torch.randn(clean.shape, generator=generator).to(clean.device)
            corrupted = (clean + float(level) * noise).clamp(0, 1)
            recon = model.reconstruct(corrupted, batch.y).float().clamp(0, 1)
            psnr = lambda a: peak_signal_noise_ratio(a, clean, data_range=1.0, reduction="none",  # noqa: E731
                                                     dim=(1, 2, 3)).clamp_max(100.0)
            denoised += float(psnr(recon).sum())
            noisy += float(psnr(corrupted).sum())
            count += len(batch)
        out[f"denoise_psnr_{level:g}"] = denoised / max(count, 1)
        out[f"noisy_psnr_{level:g}"] = noisy / max(count, 1)
    return out
