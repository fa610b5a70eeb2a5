"""Variational autoencoder: Gaussian encoder, reparameterisation, analytic KL to N(0, I) weighted by beta."""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder, Condition, Diagnostics
from aelab.nets import Arch

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E[z|x]) exceeds this


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:  # (B, D) -> (B, D): KL(N(mu, var) || N(0, 1))
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(Autoencoder):
    has_prior = True
    has_posterior = True

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: int, beta: float = 1.0,
                 likelihood: str = "bernoulli", input_noise: float = 0.0, num_classes: int | None = None,
                 recon_weight: float = 1.0, condition: Condition | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, condition)
        self.beta, self.recon_weight = float(beta), float(recon_weight)
        extra = condition.encoder_features if condition is not None else 0
        self.encoder = arch.encoder(self.input_shape, 2 * self.latent_dim, extra)  # -> [mu, logvar]
        self.decoder = arch.decoder(self.decoder_features(), self.input_shape)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, D), (B, D)
        mu, logvar = self.encoder(x, self.encoder_condition(y)).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.posterior(x, y)[0]  # the posterior mean is the deterministic code

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(self.decoder_input(z, y))

    def kl_weight(self, step: int) -> float:
        """The weight on the KL term; the hook a beta schedule overrides."""
        return self.beta

    def kl_penalty(self, kl_per_dim: Tensor) -> Tensor:
        """The KL term from the batch-mean KL of each dimension (D,); the hook free bits override."""
        return kl_per_dim.sum()

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        recon = self.recon_weight * self.likelihood.batch_nll(self.decode(z, batch.y), batch.x)
        kl_per_dim = gaussian_kl(mu, logvar).mean(0)  # (D,)
        return {"recon": recon, "kl": self.kl_weight(step) * self.kl_penalty(kl_per_dim)}

    def prior(self, n: int) -> Tensor:  # (n, D)
        return torch.randn(n, self.latent_dim, device=self.device)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        y = self.default_labels(n) if y is None else y
        return self.likelihood.mean(self.decode(self.prior(n), y))

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the KL of each latent dimension and the number of active units (posterior collapse shows here)."""
        out = super().diagnostics(batch)
        mu, logvar = self.posterior(batch.x, batch.y)
        kl_per_dim = gaussian_kl(mu, logvar).float().mean(0)  # (D,) unweighted
        out.scalars.update({f"kl_dim/{d:02d}": float(v) for d, v in enumerate(kl_per_dim)})
        out.scalars["active_units"] = float((mu.float().var(0) > ACTIVE_UNIT_THRESHOLD).sum())
        out.histograms["kl_per_dim"] = kl_per_dim
        return out
