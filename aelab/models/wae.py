"""Wasserstein autoencoder, MMD version (Tolstikhin et al. 2018): reconstruction plus lambda_mmd * MMD(q(z), p(z)).

The penalty matches the *aggregate* code distribution to the N(0, I) prior, not each example's posterior,
so a deterministic encoder is allowed (the paper's default) and codes of different inputs stay apart.
The reconstruction cost is the data's likelihood term (BCE for images, half squared error for gaussian).
The paper's MNIST setting, 0.05 * squared error with lambda = 10, has the balance of lambda_mmd = 100 here:
per pixel the gradient of BCE (in logits) and of half squared error is (mean - x), ten times that of
0.05 * squared error. experiment=wae_mnist uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder, Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.mmd import DIAGNOSTIC_BLOCK, KERNELS, SCALES, loss_block, mmd_to_standard_normal
from aelab.models.vae import reparameterize
from aelab.nets import Arch
from aelab.schema import OneOf, Range

ENCODERS = ("deterministic", "gaussian")  # z = f(x), or z ~ N(mu(x), diag sigma^2(x)) by reparameterisation


class WAE(Autoencoder):
    directions = {"code_mean_norm": "min", "code_std_mean": None, "posterior_std_mean": None}
    has_prior = True

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None,
                 lambda_mmd: Annotated[float, Range(0, None)] = 100.0,
                 kernel: Annotated[str, OneOf(KERNELS)] = "imq",
                 scales: Annotated[Sequence[float], Range(0, None, low_open=True)] = SCALES,
                 encoder: Annotated[str, OneOf(ENCODERS)] = "deterministic") -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.lambda_mmd, self.kernel, self.scales = float(lambda_mmd), kernel, tuple(float(s) for s in scales)
        self.encoder_kind = encoder
        width = 2 * self.latent_dim if encoder == "gaussian" else self.latent_dim  # gaussian: [mu, logvar]
        self.encoder = arch.encoder(self.input_shape, width)
        self.decoder = arch.decoder(self.latent_dim, self.input_shape)

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        from aelab.errors import UserError

        if not options.get("scales"):
            raise UserError(f"{key}.scales", "no kernel scales", "a list of positive numbers, e.g. [0.5,1,2]")

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, D), (B, D)
        """A Gaussian encoder's mean and log-variance. Not announced as has_posterior: WAE's objective is no
        likelihood bound, and its encoder variances shrink towards 0, so ELBO and IS-NLL would mean little."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.posterior(x)[0] if self.encoder_kind == "gaussian" else self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def training_codes(self, x: Tensor) -> Tensor:  # (B, D): the codes the decoder and the penalty see
        if self.encoder_kind == "deterministic":
            return self.encoder(x)
        mu, logvar = self.posterior(x)
        return reparameterize(mu, logvar)

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z = self.training_codes(self.corrupt(batch.x))
        recon = self.likelihood.batch_nll(self.decode(z), batch.x)
        mmd = mmd_to_standard_normal(z.float(), self.kernel, self.scales, block=loss_block(self.training))
        return {"recon": recon, "mmd": self.lambda_mmd * mmd}

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.decode(torch.randn(n, self.latent_dim, device=self.device)))

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """The unweighted MMD of validation codes to the prior, and how far their moments are from N(0, I)."""
        out = super().diagnostics(batch)
        z = self.training_codes(batch.x).float()
        out.scalars["mmd"] = float(mmd_to_standard_normal(z, self.kernel, self.scales, block=DIAGNOSTIC_BLOCK))
        out.scalars["code_mean_norm"] = float(z.mean(0).norm())
        out.scalars["code_std_mean"] = float(z.std(0).mean())
        if self.encoder_kind == "gaussian":
            out.scalars["posterior_std_mean"] = float((0.5 * self.posterior(batch.x)[1].float()).exp().mean())
        return out
