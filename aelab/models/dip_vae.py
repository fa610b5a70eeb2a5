"""DIP-VAE (Kumar et al. 2018): the VAE plus a penalty pulling the covariance of the aggregate posterior q(z)
towards the identity, so the code dimensions are decorrelated.

variant i penalises Cov_x[mu(x)], the covariance of the posterior means; variant ii the covariance of q(z)
itself, Cov_x[mu(x)] + E_x[diag var(x)]. The penalty is lambda_od * sum_{i != j} C_ij^2 + lambda_d *
sum_i (C_ii - 1)^2, on the batch's covariance. The paper: lambda_d = 10 lambda_od for i, lambda_d = lambda_od for ii.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE
from aelab.nets import Arch
from aelab.nets.precision import full_precision
from aelab.schema import OneOf, Range

VARIANTS = ("i", "ii")


def code_covariance(mu: Tensor, logvar: Tensor, variant: str) -> Tensor:  # (B, D), (B, D) -> (D, D)
    with full_precision(mu, logvar) as (mu, logvar):  # a covariance in bf16 loses the off-diagonal terms it penalises
        centred = mu - mu.mean(0)
        cov = centred.T @ centred / max(mu.shape[0] - 1, 1)  # Cov_x[mu(x)]
    return cov if variant == "i" else cov + torch.diag(logvar.exp().mean(0))  # ii: + E_x[Cov q(z|x)]


def dip_penalty(cov: Tensor, lambda_od: float, lambda_d: float) -> Tensor:  # (D, D) -> scalar
    diagonal = torch.diagonal(cov)
    off_diagonal = cov - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum() + lambda_d * (diagonal - 1).pow(2).sum()


class DIPVAE(VAE):
    """variant: i | ii; lambda_od, lambda_d: weights of the off-diagonal and diagonal penalties."""
    directions = {"code_cov_mean_diagonal": None, "code_cov_max_off_diagonal": "min"}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 variant: Annotated[str, OneOf(VARIANTS)] = "i", lambda_od: Annotated[float, Range(0, None)] = 10.0,
                 lambda_d: Annotated[float, Range(0, None)] = 100.0, beta: Annotated[float, Range(0, None)] = 1.0,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes)
        if variant not in VARIANTS:
            from aelab.errors import UserError

            raise UserError("model.variant", f"unknown value {variant!r}", "one of: " + ", ".join(VARIANTS))
        self.variant, self.lambda_od, self.lambda_d = variant, float(lambda_od), float(lambda_d)

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        cov = code_covariance(mu, logvar, self.variant)
        return {**super().latent_terms(mu, logvar, z, step),
                "dip_penalty": dip_penalty(cov, self.lambda_od, self.lambda_d)}

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the largest off-diagonal |covariance| and the mean diagonal of the penalised covariance."""
        out = super().diagnostics(batch)
        cov = code_covariance(*self.posterior(batch.x, batch.y), self.variant).float()
        diagonal = torch.diagonal(cov)
        out.scalars["code_cov_max_off_diagonal"] = float((cov - torch.diag(diagonal)).abs().max())
        out.scalars["code_cov_mean_diagonal"] = float(diagonal.mean())
        return out
