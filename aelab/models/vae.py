"""Variational autoencoder: Gaussian encoder, reparameterisation, analytic KL to N(0, I) weighted by beta."""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder
from aelab.nets import Arch


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:  # (B, D) -> (B, D): KL(N(mu, var) || N(0, 1))
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(Autoencoder):
    has_prior = True

    def __init__(self, arch: Arch, input_shape: tuple[int, int, int], latent_dim: int, beta: float = 1.0,
                 likelihood: str = "bernoulli", input_noise: float = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.beta = float(beta)
        self.encoder = arch.encoder(self.input_shape, 2 * self.latent_dim)  # -> [mu, logvar]
        self.decoder = arch.decoder(self.latent_dim, self.input_shape)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, D), (B, D)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.posterior(x)[0]  # the posterior mean is the deterministic code

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def kl_weight(self, step: int) -> float:
        """The weight on the KL term; the hook a beta schedule overrides."""
        return self.beta

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        mu, logvar = self.posterior(self.corrupt(batch.x))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        recon = self.likelihood.batch_nll(self.decode(z), batch.x)
        kl = gaussian_kl(mu, logvar).sum() / batch.x.shape[0]
        return {"recon": recon, "kl": self.kl_weight(step) * kl}

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decode(z))
