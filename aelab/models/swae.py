"""Sliced-Wasserstein autoencoder (Kolouri et al. 2019): reconstruction plus lambda_sw * SW_p^p(codes, prior).

The WAE with the sliced Wasserstein distance in place of the MMD: the batch's codes and as many prior draws are
projected on `projections` random directions, sorted and paired (aelab/models/sliced.py). The distance needs only
samples of the prior, so any prior the AAE can draw serves (gaussian, uniform, a grid of patches, a mixture),
with no discriminator and no kernel bandwidth to choose. Networks and encoder kinds are the WAE's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder, Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.priors import PRIORS, LatentPrior, check_prior_options
from aelab.models.sliced import random_directions, sliced_wasserstein
from aelab.models.wae import ENCODERS, WAE
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range

DIAGNOSTIC_PROJECTIONS = 500  # directions of the validation distance: a steadier number than one step's


class SWAE(WAE):
    directions = {"code_mean_norm": None}  # the best code mean is the prior's, not always 0

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 lambda_sw: Annotated[float, Range(0, None)] = 100.0,
                 projections: Annotated[int, Range(1, None)] = 50, p: Annotated[float, Range(1, None)] = 2.0,
                 prior: Annotated[str, OneOf(PRIORS)] = "gaussian", grid_size: Annotated[int, Range(1, None)] = 3,
                 grid_extra: Annotated[int, Range(0, None)] = 0,
                 encoder: Annotated[str, OneOf(ENCODERS)] = "deterministic") -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, lambda_mmd=0.0,
                         encoder=encoder)
        self.lambda_sw, self.projections, self.p = float(lambda_sw), int(projections), float(p)
        self.prior = LatentPrior(prior, self.latent_dim, num_classes, grid_size, grid_extra)

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        check_prior_options(options, key)

    def sliced_distance(self, z: Tensor, projections: int) -> Tensor:  # (B, D) -> (): SW_p^p to as many prior draws
        drawn = self.prior.sample(z.shape[0], None, z.device)
        return sliced_wasserstein(z, drawn, random_directions(projections, self.latent_dim, z.device), self.p)

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z = self.training_codes(self.corrupt(batch.x))
        recon = self.likelihood.batch_nll(self.decode(z), batch.x)
        return {"recon": recon, "sw": self.lambda_sw * self.sliced_distance(z, self.projections)}

    def prior_codes(self, n: int) -> Tensor:  # (n, latent_dim)
        return self.prior.sample(n, None, self.device)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.decode(self.prior_codes(n)))

    def prior_quantile(self, p: Tensor) -> Tensor:  # (P,) -> (P, latent_dim)
        return self.prior.quantile(p)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """The unweighted sliced distance of validation codes to the prior (on more directions than a step's), and
        the codes' moments. Not the WAE's: its MMD is to N(0, I), and this prior may be another."""
        out = Autoencoder.diagnostics(self, batch)
        z = self.training_codes(batch.x).float()
        out.scalars["sw"] = float(self.sliced_distance(z, DIAGNOSTIC_PROJECTIONS))
        out.scalars["code_mean_norm"] = float(z.mean(0).norm())
        out.scalars["code_std_mean"] = float(z.std(0).mean())
        if self.encoder_kind == "gaussian":
            out.scalars["posterior_std_mean"] = float((0.5 * self.posterior(batch.x)[1].float()).exp().mean())
        return out
