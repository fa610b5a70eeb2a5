"""Variational autoencoder: Gaussian encoder, reparameterisation, analytic KL to N(0, I) weighted by beta."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder, Condition, Diagnostics
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.schema import Annotated, OneOf, Range

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E[z|x]) exceeds this


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:  # (B, D) -> (B, D): KL(N(mu, var) || N(0, 1))
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reparameterize(mu: Tensor, logvar: Tensor, samples: int | None = None) -> Tensor:  # (B, D) -> (B, D) | (S, B, D)
    """Draws z = mu + sigma * eps, eps ~ N(0, I), that gradients flow through (the reparameterisation trick);
    `samples` draws at once along a new first axis (the IWAE bound's k)."""
    if samples is None:
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    return mu + torch.randn(samples, *mu.shape, device=mu.device) * (0.5 * logvar).exp()


class VAE(Autoencoder):
    directions = {"active_units": "max"}  # few active units: posterior collapse
    has_prior = True
    has_posterior = True
    prior_is_standard_normal = True  # whether the KL of each dimension to N(0, 1) is the model's KL term

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 1.0, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 recon_weight: Annotated[float, Range(0, None)] = 1.0, condition: Condition | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, condition)
        self.beta, self.recon_weight = float(beta), float(recon_weight)
        extra = condition.encoder_features if condition is not None else 0
        self.encoder = build_encoder(arch, self.input_shape, 2 * self.latent_dim, extra,  # -> [mu, logvar]
                                     family=type(self).__name__)
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
        z = reparameterize(mu, logvar)
        recon = self.recon_weight * self.likelihood.batch_nll(self.decode(z, batch.y), batch.x)
        return {"recon": recon, **self.latent_terms(mu, logvar, z, step)}

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        """The weighted terms on the code z ~ q(z|x) (B, D): the KL to N(0, I); the hook VAE variants override."""
        kl_per_dim = gaussian_kl(mu, logvar).mean(0)  # (D,)
        return {"kl": self.kl_weight(step) * self.kl_penalty(kl_per_dim)}

    # ---- what eval measures through (ELBO, importance-sampled NLL); variants with another prior override ----
    def elbo_terms(self, x: Tensor, y: Tensor | None = None, samples: int = 1) -> tuple[Tensor, Tensor]:
        """Per example (B,): the reconstruction NLL averaged over `samples` draws z ~ q(z|x), and the KL (beta = 1)."""
        mu, logvar = self.posterior(x, y)  # (B, D)
        recon = torch.zeros(x.shape[0], device=x.device)
        for _ in range(samples):
            z = reparameterize(mu, logvar)
            recon += self.likelihood.nll(self.decode(z, y).float(), x)
        return recon / samples, gaussian_kl(mu.float(), logvar.float()).sum(1)

    def importance_sampler(self, x: Tensor, y: Tensor | None = None) -> Callable[[int], tuple[Tensor, Tensor]]:
        """Encodes x (B, ...) once; returns draw(s) -> (decoder logits (s, B, ...) of s draws z ~ q(z|x),
        log p(z) - log q(z|x) (s, B)): what the importance-sampled NLL needs from a family."""
        mu, logvar = self.posterior(x, y)  # (B, D)
        std = (0.5 * logvar).exp()
        half_logvar_sum = 0.5 * logvar.sum(1)  # (B,)

        def draw(s: int) -> tuple[Tensor, Tensor]:
            eps = torch.randn(s, *mu.shape, device=mu.device)  # (s, B, D)
            z = torch.addcmul(mu, eps, std)
            labels = None if y is None else y.repeat(s)  # (s*B,) matching z's (s, B) order
            logits = self.decode(z.reshape(-1, z.shape[-1]), labels)  # (s*B, ...)
            # log p(z) - log q(z|x) = 0.5 * (sum eps^2 - sum z^2 + sum logvar): the 2 pi terms cancel
            log_ratio = 0.5 * eps.square_().sub_(z.square_()).sum(-1) + half_logvar_sum  # (s, B); z is decoded already
            return logits.view(s, x.shape[0], *logits.shape[1:]), log_ratio

        return draw

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
        if self.prior_is_standard_normal:  # otherwise the KL to N(0, 1) is not the model's KL term
            kl_per_dim = gaussian_kl(mu, logvar).float().mean(0)  # (D,) unweighted
            out.scalars.update({f"kl_dim/{d:02d}": float(v) for d, v in enumerate(kl_per_dim)})
            out.histograms["kl_per_dim"] = kl_per_dim
        out.scalars["active_units"] = float((mu.float().var(0) > ACTIVE_UNIT_THRESHOLD).sum())
        return out
