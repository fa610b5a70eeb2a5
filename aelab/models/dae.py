"""Denoising autoencoder: the input is corrupted on the fly on the device, the target is the clean example."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.errors import UserError
from aelab.models.ae import AE
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range


def gaussian(x: Tensor, noise: float, factor: int) -> Tensor:
    return x + noise * torch.randn_like(x)


def salt_pepper(x: Tensor, noise: float, factor: int) -> Tensor:
    """A fraction `noise` of the entries set to the low or high end of the data's range (half each)."""
    hit = torch.rand_like(x) < noise
    high = torch.rand_like(x) < 0.5
    low_value, high_value = x.amin(0, keepdim=True), x.amax(0, keepdim=True)  # per feature, over the batch
    return torch.where(hit, torch.where(high, high_value, low_value), x)


def masking(x: Tensor, noise: float, factor: int) -> Tensor:
    """Each entry dropped (set to 0) with probability `noise`."""
    return x * (torch.rand_like(x) >= noise)


def downsample(x: Tensor, noise: float, factor: int) -> Tensor:
    """Super-resolution input: average-pooled by `factor`, then upsampled back to the original size."""
    small = F.avg_pool2d(x, factor, ceil_mode=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


CORRUPTIONS = {"gaussian": gaussian, "salt_pepper": salt_pepper, "masking": masking, "downsample": downsample}
RATES = ("salt_pepper", "masking")  # corruptions whose noise is the fraction of entries hit, not a std


class DAE(AE):
    """`noise` is the std (gaussian) or the rate (salt_pepper, masking); downsample uses `factor` instead."""

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        noise, corruption = options.get("input_noise"), options.get("corruption")
        if corruption in RATES and isinstance(noise, (int, float)) and noise > 1:
            raise UserError(f"{key}.input_noise", f"{corruption} hits a fraction of the entries: {noise} is not one",
                            "0 <= noise <= 1")

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None, weight_decay: Annotated[float, Range(0, None)] = 0.0,
                 corruption: Annotated[str, OneOf(CORRUPTIONS)] = "gaussian",
                 factor: Annotated[int, Range(1, None)] = 2, clip: bool = True) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, weight_decay)
        if corruption not in CORRUPTIONS:
            raise UserError("model.corruption", f"unknown value {corruption!r}", "one of: " + ", ".join(CORRUPTIONS))
        if corruption == "downsample" and not self.images:
            raise UserError("model.corruption", f"downsample needs images, the data has shape {list(input_shape)}",
                            "gaussian, salt_pepper or masking")
        self.corruption, self.factor, self.clip = corruption, int(factor), bool(clip)

    @property
    def corrupts(self) -> bool:
        return self.factor > 1 if self.corruption == "downsample" else self.input_noise > 0

    def add_noise(self, x: Tensor) -> Tensor:
        noisy = CORRUPTIONS[self.corruption](x, self.input_noise, self.factor)
        support = self.likelihood.support
        return noisy.clamp(*support) if self.clip and support is not None else noisy
