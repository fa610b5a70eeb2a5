"""VAE with an inverse autoregressive flow posterior (Kingma et al. 2016, "Improved variational inference with
inverse autoregressive flow"); pythae's VAE_IAF is the peer.

The encoder gives mu, sigma and a context h; z_0 = mu + sigma * eps, then `flows` IAF steps, each a MADE
(aelab/nets/made.py) reading z_{t-1} and h and giving (m, s):

    g = sigmoid(s + FORGET_BIAS),  z_t = g * z_{t-1} + (1 - g) * m     (the paper's LSTM-type, stable update)

Output i of the MADE sees only the z coordinates before i, so dz_t/dz_{t-1} is triangular with diagonal g and
log q(z_T|x) = log N(z_0; mu, sigma) - sum_t sum_i log g_ti. The order is reversed between steps. The loss is the
single-sample negative ELBO, -[log p(x|z_T) + log p(z_T) - log q(z_T|x)], and eval's ELBO and IS-NLL weigh
the same flow density (elbo_terms, importance_sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.models.base import Diagnostics
from aelab.models.iwae import log_normal
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.nets.made import MADE
from aelab.schema import OneOf, Range

# Added to s before the sigmoid: the gates start near sigmoid(1) = 0.73, each step close to the identity, so
# early training is the diagonal VAE's (the paper: "a forget gate bias of +1 or +2").
FORGET_BIAS = 1.0


class VAEIAF(VAE):
    """posterior(x) is q(z_0|x), the flow's Gaussian base (what active units count); encode(x) is the flow's image
    of its mean, the code the decoder reads. The model's KL is not the per-dimension KL to N(0, 1)."""

    prior_is_standard_normal = False
    directions = {"flow_logdet": None}  # how much the flow contracts the base: a description, no better side

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 flows: Annotated[int, Range(0, None)] = 2,
                 made_hidden: Annotated[Sequence[int], Range(1, None)] = (128, 128),
                 context_dim: Annotated[int, Range(0, None)] = 16,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        # the VAE's constructor builds an encoder of 2 * latent_dim outputs: skip it, this one also gives h
        super(VAE, self).__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.beta, self.recon_weight, self.context_dim = 1.0, 1.0, int(context_dim)
        self.encoder = build_encoder(arch, self.input_shape, 2 * self.latent_dim + self.context_dim, 0,
                                     family=type(self).__name__)  # -> [mu, logvar, h]
        self.decoder = arch.decoder(self.decoder_features(), self.input_shape)
        hidden = [int(h) for h in made_hidden]
        self.flows = nn.ModuleList(MADE(self.latent_dim, hidden, heads=2, context_dim=self.context_dim,
                                        reverse=t % 2 == 1) for t in range(int(flows)))

    # ---- the posterior ----------------------------------------------------------------------------
    def encoded(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """mu, logvar (B, D) of q(z_0|x) and the context h (B, C), None without one."""
        out = self.encoder(x, None)
        d = self.latent_dim
        return out[:, :d], out[:, d : 2 * d], (out[:, 2 * d :] if self.context_dim else None)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (B, D), (B, D)
        mu, logvar, _ = self.encoded(x, y)
        return mu, logvar

    def flow(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:  # (..., D), (..., C) -> (..., D), (...)
        """z_T and sum_t log|det dz_t/dz_{t-1}| = sum_t sum_i log g_ti."""
        lead = z.shape[:-1]
        z = z.reshape(-1, self.latent_dim)
        h = None if h is None else h.expand(*lead, h.shape[-1]).reshape(-1, h.shape[-1])
        logdet = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for made in self.flows:
            m, s = made(z, h)
            s = s + FORGET_BIAS
            gate = torch.sigmoid(s)
            z = gate * z + (1 - gate) * m
            logdet = logdet + nn.functional.logsigmoid(s).sum(-1)  # log g, stable for large |s|
        return z.reshape(*lead, self.latent_dim), logdet.reshape(lead)

    def draw(self, x: Tensor, s: int | None = None) -> tuple[Tensor, Tensor]:
        """z_T ~ q(z_T|x) (B, D) and log p(z_T) - log q(z_T|x) (B,), with a leading sample axis s when given
        (x is encoded once); reparameterised, so gradients flow through both."""
        mu, logvar, h = self.encoded(x)
        shape = mu.shape if s is None else (s, *mu.shape)
        eps = torch.randn(shape, device=mu.device, dtype=mu.dtype)
        z0 = mu + eps * (0.5 * logvar).exp()
        z, logdet = self.flow(z0, h)
        log_q = log_normal(z0, mu, logvar) - logdet
        return z, log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - log_q

    def posterior_draw(self, x: Tensor, y: Tensor | None, eps: Tensor) -> Tensor:  # eps (B, D) -> z_T (B, D)
        """The draw of q(z_T|x) that standard noise eps makes: what fit-prior fits its densities to."""
        mu, logvar, h = self.encoded(x, y)
        return self.flow(mu + eps * (0.5 * logvar).exp(), h)[0]

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        mu, _, h = self.encoded(x, y)
        return self.flow(mu, h)[0]

    # ---- the bound ----------------------------------------------------------------------------------
    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z, log_ratio = self.draw(self.corrupt(batch.x))
        recon = self.likelihood.batch_nll(self.decode(z), batch.x)
        return {"recon": recon, "kl": self.kl_weight(step) * -log_ratio.mean()}  # one-draw KL of the flow posterior

    def elbo_terms(self, x: Tensor, y: Tensor | None = None, samples: int = 1) -> tuple[Tensor, Tensor]:
        recon = torch.zeros(x.shape[0], device=x.device)
        kl = torch.zeros(x.shape[0], device=x.device)
        for _ in range(samples):
            z, log_ratio = self.draw(x)
            recon += self.likelihood.nll(self.decode(z).float(), x)
            kl -= log_ratio.float()
        return recon / samples, kl / samples

    def importance_sampler(self, x: Tensor, y: Tensor | None = None) -> Callable[[int], tuple[Tensor, Tensor]]:
        mu, logvar, h = self.encoded(x)  # encoded once; each draw runs the flow on s x B codes

        def draw(s: int) -> tuple[Tensor, Tensor]:
            z0 = mu + torch.randn(s, *mu.shape, device=mu.device, dtype=mu.dtype) * (0.5 * logvar).exp()
            z, logdet = self.flow(z0, h)  # (s, B, D), (s, B)
            log_ratio = log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - log_normal(z0, mu, logvar) + logdet
            logits = self.decode(z.reshape(-1, z.shape[-1]))
            return logits.view(s, x.shape[0], *logits.shape[1:]), log_ratio

        return draw

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds flow_logdet: the mean sum of log-gates per example (0: the flow leaves the Gaussian base as it is)."""
        out = super().diagnostics(batch)
        mu, _, h = self.encoded(batch.x)
        out.scalars["flow_logdet"] = float(self.flow(mu, h)[1].float().mean())
        return out
