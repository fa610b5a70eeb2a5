"""Sparse autoencoder: a sparsity penalty on the code (L1 of the activations, or a Bernoulli KL to a target rate)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.ae import AE
from aelab.models.base import Diagnostics, Picture
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range

PENALTIES = ("l1", "kl")


def activation(z: Tensor) -> Tensor:  # (B, D) -> (B, D) in [0, 1)
    """How strongly each code unit fires: |a| -> 2 * sigmoid(|a|) - 1."""
    return 2 * torch.sigmoid(z.abs()) - 1


def bernoulli_kl(rho: float, rho_hat: Tensor) -> Tensor:  # (D,) KL(Bernoulli(rho) || Bernoulli(rho_hat))
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


class SparseAE(AE):
    """penalty=l1: beta * summed activation per example; penalty=kl: beta * sum over units of KL(rho || mean activation)."""
    directions = {"mean_activation": None, "active_fraction": None}  # targets, not scores

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 1.0, penalty: Annotated[str, OneOf(PENALTIES)] = "l1",
                 rho: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.05,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None, weight_decay: Annotated[float, Range(0, None)] = 0.0) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, weight_decay)
        if penalty not in PENALTIES:
            raise UserError("model.penalty", f"unknown value {penalty!r}", "one of: " + ", ".join(PENALTIES))
        self.beta, self.penalty, self.rho = float(beta), penalty, float(rho)

    def code_penalties(self, z: Tensor) -> dict[str, Tensor]:
        a = activation(z)  # (B, D)
        if self.penalty == "l1":
            return {"sparsity": self.beta * a.sum(1).mean()}
        return {"sparsity": self.beta * bernoulli_kl(self.rho, a.mean(0)).sum()}  # per unit, over the batch

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds activation histograms and, with labels, the mean activation of each unit per class as an image."""
        out = super().diagnostics(batch)
        a = activation(self.encode(batch.x, batch.y)).float()  # (B, D)
        out.histograms["activations"] = a.flatten()
        out.histograms["unit_mean_activation"] = a.mean(0)
        out.scalars["mean_activation"] = float(a.mean())
        out.scalars["active_fraction"] = float((a > 0.1).float().mean())  # entries firing above 0.1
        if batch.y is not None:
            out.images["mean_activation_per_class"] = per_class_image(a, batch.y, self.num_classes or int(batch.y.max()) + 1)
        return out


def per_class_image(a: Tensor, y: Tensor, num_classes: int) -> Picture:
    """Mean activation (B, D) per class: one sqrt(D) x sqrt(D) tile per class when D is square, else one row per class."""
    d = a.shape[1]
    means = torch.stack([a[y == c].mean(0) if (y == c).any() else a.new_zeros(d) for c in range(num_classes)])  # (K, D)
    means = means / means.amax().clamp_min(1e-8)  # brightest unit white
    side = math.isqrt(d)
    if side * side == d:
        tiles, (sy, sx), nrow = means.view(num_classes, 1, side, side), (max(1, 48 // side),) * 2, min(num_classes, 10)
    else:
        tiles, (sy, sx), nrow = means.view(1, 1, num_classes, d), (8, max(1, 256 // d)), 1
    return Picture(tiles.repeat_interleave(sy, dim=-2).repeat_interleave(sx, dim=-1), per_row=nrow)
