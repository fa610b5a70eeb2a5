"""Two stochastic layers, as in the IWAE paper's two-layer model (Burda et al. 2016): x -> h1 (100) -> h2 (50).

Inference: q(h1|x) q(h2|h1); generation: p(h2) = N(0, I), p(h1|h2), p(x|h1). The arch builds the networks
between x and h1 (the paper: two tanh layers of 200); small MLPs (`middle_hidden`, the paper: two of 100)
connect h1 and h2. latent_dim is the top layer's size (h2, the code `encode` returns). The KL terms of both
layers are estimated on the reparameterised draws; eval's ELBO and IS-NLL weigh both layers' densities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.iwae import log_normal
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.nets.mlp import ACTIVATIONS, mlp
from aelab.schema import OneOf, Range

MIDDLE_ACTIVATIONS = tuple(ACTIVATIONS)


class HierarchicalVAE(VAE):
    """posterior(x) is the top layer's Gaussian at the middle layer's mean, q(h2 | E[h1|x]): the deterministic code
    and what the per-dimension views show; the model's KL is that of both layers (prior_is_standard_normal=False)."""

    prior_is_standard_normal = False

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 middle_dim: Annotated[int, Range(1, None)] = 100,
                 middle_hidden: Annotated[Sequence[int], Range(1, None)] = (100, 100),
                 middle_activation: Annotated[str, OneOf(MIDDLE_ACTIVATIONS)] = "tanh",
                 beta: Annotated[float, Range(0, None)] = 1.0,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        # the VAE's constructor builds one latent layer's networks: skip it, build both layers' here
        super(VAE, self).__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.beta, self.recon_weight, self.middle_dim = float(beta), 1.0, int(middle_dim)
        hidden = [int(h) for h in middle_hidden]
        self.encoder = arch.encoder(self.input_shape, 2 * self.middle_dim)  # x -> q(h1|x): [mu, logvar]
        self.decoder = arch.decoder(self.middle_dim, self.input_shape)  # h1 -> p(x|h1) logits
        self.upper_encoder = mlp([self.middle_dim, *hidden, 2 * self.latent_dim], middle_activation)  # q(h2|h1)
        self.upper_decoder = mlp([self.latent_dim, *hidden[::-1], 2 * self.middle_dim], middle_activation)  # p(h1|h2)

    # ---- the layers ---------------------------------------------------------------------------
    def middle_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:  # q(h1|x): (B, M), (B, M)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def top_posterior(self, h1: Tensor) -> tuple[Tensor, Tensor]:  # q(h2|h1): (..., D), (..., D)
        mu, logvar = self.upper_encoder(h1).chunk(2, dim=-1)
        return mu, logvar

    def middle_prior(self, h2: Tensor) -> tuple[Tensor, Tensor]:  # p(h1|h2): (..., M), (..., M)
        mu, logvar = self.upper_decoder(h2).chunk(2, dim=-1)
        return mu, logvar

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, D), (B, D)
        return self.top_posterior(self.middle_posterior(x)[0])

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits of x from a top code: through the middle layer's prior mean (sample draws h1 instead)."""
        return self.decoder(self.middle_prior(z)[0])

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Through the middle layer's posterior mean, the way the bound reconstructs (not up to h2 and back)."""
        return self.likelihood.mean(self.decoder(self.middle_posterior(x)[0]))

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        h1 = reparameterize(*self.middle_prior(self.prior(n)))  # ancestral: h2 ~ N(0, I), h1 ~ p(h1|h2)
        return self.likelihood.mean(self.decoder(h1))

    # ---- the bound ------------------------------------------------------------------------------
    def layer_draws(self, x: Tensor, s: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """h1 ~ q(h1|x), h2 ~ q(h2|h1) and log p(h1, h2) - log q(h1, h2|x): (B, M), (B, D), (B,), with a leading
        sample axis s when given (x is encoded once)."""
        mu1, logvar1 = self.middle_posterior(x)  # (B, M)
        if s is not None:
            mu1, logvar1 = mu1.expand(s, *mu1.shape), logvar1.expand(s, *logvar1.shape)  # (s, B, M)
        h1 = reparameterize(mu1, logvar1)
        mu2, logvar2 = self.top_posterior(h1)
        h2 = reparameterize(mu2, logvar2)
        log_prior = log_normal(h2, torch.zeros_like(h2), torch.zeros_like(h2)) + log_normal(h1, *self.middle_prior(h2))
        return h1, h2, log_prior - log_normal(h1, mu1, logvar1) - log_normal(h2, mu2, logvar2)

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        h1, _, log_ratio = self.layer_draws(self.corrupt(batch.x))
        recon = self.likelihood.batch_nll(self.decoder(h1), batch.x)
        return {"recon": recon, "kl": self.kl_weight(step) * -log_ratio.mean()}  # both layers' KL, one draw each

    def elbo_terms(self, x: Tensor, y: Tensor | None = None, samples: int = 1) -> tuple[Tensor, Tensor]:
        recon = torch.zeros(x.shape[0], device=x.device)
        kl = torch.zeros(x.shape[0], device=x.device)
        for _ in range(samples):
            h1, _, log_ratio = self.layer_draws(x)
            recon += self.likelihood.nll(self.decoder(h1).float(), x)
            kl -= log_ratio
        return recon / samples, kl / samples

    def importance_sampler(self, x: Tensor, y: Tensor | None = None) -> Callable[[int], tuple[Tensor, Tensor]]:
        def draw(s: int) -> tuple[Tensor, Tensor]:
            h1, _, log_ratio = self.layer_draws(x, s)  # (s, B, M), (s, B)
            logits = self.decoder(h1.reshape(-1, h1.shape[-1]))
            return logits.view(s, x.shape[0], *logits.shape[1:]), log_ratio

        return draw
