"""InfoVAE, MMD version (Zhao et al. 2019): the ELBO with the KL scaled by (1 - alpha), plus
(alpha + lambda - 1) * MMD(q(z), p(z)) on the aggregate posterior.

alpha = 0 keeps the full ELBO and adds the MMD; alpha = 1 drops the per-example KL (the "MMD-VAE"),
which lets q(z|x) be as informative as it likes while the codes as a whole still match N(0, I). The
MMD is the one WAE uses (aelab/models/mmd.py), on the same reparameterised codes the decoder sees
(the VAE's latent_terms hook: nothing else of the VAE is repeated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.mmd import DIAGNOSTIC_BLOCK, KERNELS, SCALES, loss_block, mmd_to_standard_normal
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.schema import OneOf, Range


class InfoVAE(VAE):
    directions = {"mmd": "min"}
    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None,
                 alpha: Annotated[float, Range(None, 1)] = 0.0,
                 lambda_mmd: Annotated[float, Range(0, None, low_open=True)] = 10.0,
                 kernel: Annotated[str, OneOf(KERNELS)] = "rbf",
                 scales: Annotated[Sequence[float], Range(0, None, low_open=True)] = SCALES) -> None:
        # the VAE's KL weight (its beta) is 1 - alpha: the paper's weight on the per-example KL
        super().__init__(arch, input_shape, latent_dim, 1.0 - float(alpha), likelihood, input_noise, num_classes)
        self.alpha, self.lambda_mmd = float(alpha), float(lambda_mmd)
        self.kernel, self.scales = kernel, tuple(float(s) for s in scales)

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        alpha, lam = float(options.get("alpha", 0.0)), float(options.get("lambda_mmd", 10.0))
        if alpha + lam - 1 < 0:
            raise UserError(f"{key}.lambda_mmd", f"the MMD weight alpha + lambda - 1 = {alpha + lam - 1:g} is negative",
                            f"lambda_mmd >= {1 - alpha:g} for alpha = {alpha:g}")
        if not options.get("scales"):
            raise UserError(f"{key}.scales", "no kernel scales", "a list of positive numbers, e.g. [0.5,1,2]")

    @property
    def mmd_weight(self) -> float:
        return self.alpha + self.lambda_mmd - 1.0

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        """The VAE's (1 - alpha)-weighted KL, and the MMD between the batch's sampled codes z (B, D) and N(0, I)."""
        mmd = mmd_to_standard_normal(z.float(), self.kernel, self.scales, block=loss_block(self.training))
        return {**super().latent_terms(mu, logvar, z, step), "mmd": self.mmd_weight * mmd}

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the unweighted MMD of sampled validation codes to the prior."""
        out = super().diagnostics(batch)
        mu, logvar = self.posterior(batch.x, batch.y)
        z = (reparameterize(mu, logvar)).float()
        out.scalars["mmd"] = float(mmd_to_standard_normal(z, self.kernel, self.scales, block=DIAGNOSTIC_BLOCK))
        return out
