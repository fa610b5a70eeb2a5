"""Importance-weighted autoencoder (Burda et al. 2016): the VAE trained on the k-sample importance-weighted bound.

log p(x) >= E[log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)], z_i ~ q(z|x): tighter as k grows, and the
ELBO at k = 1. Same networks and posterior as the VAE, so eval's ELBO and IS-NLL apply unchanged.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.schema import OneOf, Range


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:  # (..., D) -> (...): log N(z; mu, diag(exp logvar))
    return -0.5 * ((z - mu).pow(2) * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(-1)


class IWAE(VAE):
    """k = 1 is the VAE's ELBO, computed exactly as the VAE does (analytic KL); k > 1 logs one term, iw_nll:
    the negative k-sample bound in nats per example (an upper bound on -log p(x))."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 k: Annotated[int, Range(1, None)] = 5, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, 1.0, likelihood, input_noise, num_classes)
        self.k = int(k)

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if self.k == 1:
            return super().losses(batch, step)
        return {"iw_nll": -self.iw_bound(self.corrupt(batch.x), batch.x, batch.y, self.k).mean()}

    def iw_bound(self, x_in: Tensor, x: Tensor, y: Tensor | None, k: int) -> Tensor:  # (B,) nats
        """The k-sample bound on log p(x) with reparameterised draws (gradients flow through every weight)."""
        mu, logvar = self.posterior(x_in, y)  # (B, D)
        z = reparameterize(mu, logvar, samples=k)  # (k, B, D)
        labels = None if y is None else y.repeat(k)
        logits = self.decode(z.reshape(-1, z.shape[-1]), labels)  # (k*B, ...)
        targets = x.expand(k, *x.shape).reshape(-1, *x.shape[1:])  # (k*B, ...) in z's (k, B) order
        log_px = -self.likelihood.nll(logits, targets).view(k, x.shape[0])  # (k, B); nll_of_draws has no gradient
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_w = log_px + log_pz - log_normal(z, mu, logvar)  # (k, B)
        return torch.logsumexp(log_w, 0) - math.log(k)
