"""Regularised autoencoder (Ghosh et al. 2020): a deterministic AE whose codes are kept small and whose decoder
is kept smooth, so that a density fitted to the codes after training gives a sampler.

    loss = recon + code_weight * 0.5 * |z|^2 + reg_weight * R(decoder)

R is the decoder's squared weights (regulariser=l2, RAE-L2) or the squared Frobenius norm of the decoder's
Jacobian at the codes (regulariser=gradient_penalty, RAE-GP). There is no prior to sample from: `aelab
sample` draws from a Gaussian fitted to the training codes, and `aelab fit-prior prior=gmm` fits the
mixture the paper uses (its "ex-post density estimation").
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from aelab.models.ae import AE
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import OneOf, Range

REGULARISERS = ("l2", "gradient_penalty")
FD_STEP = 1e-2  # gradient_penalty: step of the central difference along a random direction in code space


class RAE(AE):
    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None,
                 code_weight: Annotated[float, Range(0, None)] = 0.1,
                 regulariser: Annotated[str, OneOf(REGULARISERS)] = "l2",
                 reg_weight: Annotated[float, Range(0, None)] = 1e-3) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.code_weight, self.regulariser, self.reg_weight = float(code_weight), regulariser, float(reg_weight)

    def code_penalties(self, z: Tensor) -> dict[str, Tensor]:
        terms = {"code_l2": self.code_weight * 0.5 * z.float().pow(2).sum(1).mean()}
        if self.regulariser == "l2":
            terms["decoder_l2"] = self.reg_weight * sum(p.pow(2).sum() for p in self.decoder.parameters() if p.ndim > 1)
        else:
            terms["gradient_penalty"] = self.reg_weight * self.decoder_jacobian_norm(z)
        return terms

    def decoder_jacobian_norm(self, z: Tensor) -> Tensor:  # (B, D) -> (): mean over the batch of |dG/dz|_F^2
        """Stochastic estimate of the squared Frobenius norm of the decoder's Jacobian (data-space mean) at z.

        E_v |J v|^2 = |J|_F^2 for v ~ N(0, I), and J v is a central difference along v (error O(FD_STEP^2)).
        Forward differences instead of double backprop: the gradient of this penalty is a plain first-order
        gradient, which every layer supports (the oneDNN linear's backward is once-differentiable), and it
        costs two decoder passes on the batch.
        """
        v = torch.randn_like(z)
        step = FD_STEP * v
        ahead = self.likelihood.mean(self.decode(z + step)).flatten(1)  # (B, P)
        behind = self.likelihood.mean(self.decode(z - step)).flatten(1)
        jv = (ahead - behind).float() / (2 * FD_STEP)  # (B, P) ~ J v
        return jv.pow(2).sum(1).mean()
