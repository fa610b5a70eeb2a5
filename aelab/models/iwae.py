"""Importance-weighted autoencoder (Burda et al. 2016): the VAE trained on the k-sample importance-weighted bound,
and the objectives of Rainforth et al. (2018), "Tighter variational bounds are not necessarily better".

log p(x) >= E[log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)], z_i ~ q(z|x): tighter as k grows, and the
ELBO at k = 1. Same networks and posterior as the VAE, so eval's ELBO and IS-NLL apply unchanged.

A tighter bound trains the decoder better but gives the encoder a gradient whose signal-to-noise ratio falls
like 1/sqrt(k) (Rainforth et al.). Their three remedies, each on the same m * k reparameterised draws:

- miwae: the mean of m independent k-sample bounds;
- ciwae: ciwae_beta * ELBO + (1 - ciwae_beta) * IWAE bound, both from the same k draws;
- piwae: each network on its own bound in one step: the decoder on the IWAE bound of all m * k draws, the
  encoder on MIWAE(m, k). Two decoder passes: one on detached codes (reaches only the decoder's parameters),
  one through detached decoder parameters (reaches only the encoder); their values are equal.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor
from torch.func import functional_call

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.schema import OneOf, Range

OBJECTIVES = ("iwae", "miwae", "ciwae", "piwae")
READ_M = ("miwae", "piwae")  # the objectives that draw m groups of k


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:  # (..., D) -> (...): log N(z; mu, diag(exp logvar))
    return -0.5 * ((z - mu).pow(2) * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(-1)


def iwae_bound(log_w: Tensor) -> Tensor:  # (n, B) -> (B,): log (1/n) sum_i w_i
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def miwae_bound(log_w: Tensor, m: int) -> Tensor:  # (m*k, B) -> (B,): the mean of m independent k-sample bounds
    return iwae_bound(log_w.view(m, -1, log_w.shape[-1]).transpose(0, 1)).mean(0)  # groups are consecutive draws


def ciwae_bound(log_w: Tensor, beta: float) -> Tensor:  # (k, B) -> (B,): beta * ELBO + (1 - beta) * IWAE, same draws
    return beta * log_w.mean(0) + (1.0 - beta) * iwae_bound(log_w)


class IWAE(VAE):
    """k = m = 1 is the VAE's ELBO under every objective, computed exactly as the VAE does (analytic KL). Otherwise
    the loss is one term, the negative bound in nats per example: iw_nll (iwae), miwae_nll, ciwae_nll; piwae logs
    both iw_nll (what the decoder minimises) and miwae_nll (what the encoder minimises), and the loss is their sum."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 k: Annotated[int, Range(1, None)] = 5, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 objective: Annotated[str, OneOf(OBJECTIVES)] = "iwae", m: Annotated[int, Range(1, None)] = 1,
                 ciwae_beta: Annotated[float, Range(0, 1)] = 0.5) -> None:
        super().__init__(arch, input_shape, latent_dim, 1.0, likelihood, input_noise, num_classes)
        self.check_options({"objective": objective, "m": m}, "model")
        self.k, self.objective, self.m, self.ciwae_beta = int(k), objective, int(m), float(ciwae_beta)

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        objective, m = options.get("objective", "iwae"), int(options.get("m", 1))
        if m != 1 and objective not in READ_M:
            raise UserError(f"{key}.m", f"objective={objective} draws one group of k, m={m} would be ignored",
                            f"{key}.m=1, or {key}.objective=miwae|piwae")

    @property
    def monitor(self) -> str:
        """piwae's loss adds two bounds on log p(x); the model's own is the decoder's, the tighter IWAE bound."""
        return "iw_nll" if self.objective == "piwae" and self.k * self.m > 1 else "loss"

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if self.k * self.m == 1:
            return super().losses(batch, step)
        x_in = self.corrupt(batch.x)
        if self.objective == "piwae":
            return self.piwae_terms(x_in, batch.x, batch.y)
        log_w = self.log_weights(x_in, batch.x, batch.y, self.k * self.m)  # (m*k, B)
        if self.objective == "miwae":
            return {"miwae_nll": -miwae_bound(log_w, self.m).mean()}
        if self.objective == "ciwae":
            return {"ciwae_nll": -ciwae_bound(log_w, self.ciwae_beta).mean()}
        return {"iw_nll": -iwae_bound(log_w).mean()}

    def log_weights(self, x_in: Tensor, x: Tensor, y: Tensor | None, n: int) -> Tensor:  # (n, B)
        """log p(x, z_i) - log q(z_i|x) of n reparameterised draws (gradients flow through every weight)."""
        mu, logvar = self.posterior(x_in, y)  # (B, D)
        z = reparameterize(mu, logvar, samples=n)  # (n, B, D)
        return self._log_joint(z, x, y, self.decode) - log_normal(z, mu, logvar)

    def _log_joint(self, z: Tensor, x: Tensor, y: Tensor | None, decode) -> Tensor:  # (n, B, D) -> (n, B)
        n = z.shape[0]
        labels = None if y is None else y.repeat(n)
        logits = decode(z.reshape(-1, z.shape[-1]), labels)  # (n*B, ...)
        targets = x.expand(n, *x.shape).reshape(-1, *x.shape[1:])  # (n*B, ...) in z's (n, B) order
        log_px = -self.likelihood.nll(logits, targets).view(n, x.shape[0])  # nll_of_draws has no gradient
        return log_px + log_normal(z, torch.zeros_like(z), torch.zeros_like(z))

    def iw_bound(self, x_in: Tensor, x: Tensor, y: Tensor | None, k: int) -> Tensor:  # (B,) nats
        """The k-sample bound on log p(x) with reparameterised draws."""
        return iwae_bound(self.log_weights(x_in, x, y, k))

    def piwae_terms(self, x_in: Tensor, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        """iw_nll reaches only the decoder's parameters, miwae_nll only the encoder's: one backward of their sum
        gives each network the gradient of its own bound."""
        mu, logvar = self.posterior(x_in, y)  # (B, D)
        z = reparameterize(mu, logvar, samples=self.k * self.m)  # (m*k, B, D)
        log_q = log_normal(z, mu, logvar)  # (m*k, B)
        # decoder: the codes and their density are constants, so nothing reaches the encoder
        log_w_decoder = self._log_joint(z.detach(), x, y, self.decode) - log_q.detach()
        # encoder: the decoder's parameters are constants (its buffers, e.g. BatchNorm's statistics, are its own)
        frozen = {name: p.detach() for name, p in self.decoder.named_parameters()}

        def decode_frozen(codes: Tensor, labels: Tensor | None) -> Tensor:
            return functional_call(self.decoder, frozen, (self.decoder_input(codes, labels),))

        log_w_encoder = self._log_joint(z, x, y, decode_frozen) - log_q
        return {"iw_nll": -iwae_bound(log_w_decoder).mean(), "miwae_nll": -miwae_bound(log_w_encoder, self.m).mean()}
