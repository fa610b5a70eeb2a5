"""Importance-sampled negative log-likelihood (the IWAE bound) for families with a Gaussian posterior."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.errors import UserError

LOG_2PI = math.log(2 * math.pi)
DECODES_PER_CHUNK = 10_000  # (image, sample) pairs decoded at once: big enough for fast matmuls, small for cache


def require_posterior(model) -> None:
    if not getattr(model, "has_posterior", False):
        raise UserError("model", f"{type(model).__name__} has no Gaussian posterior q(z|x)",
                        "importance sampling needs a VAE-type family")


@torch.no_grad()
def importance_sampled_nll(model, x: Tensor, k: int = 1000, batch_images: int = 100,
                           samples_per_chunk: int | None = None, y: Tensor | None = None) -> Tensor:  # (N,) nats
    """-log p(x) ~= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); tight as k grows.

    Works in blocks of batch_images x samples_per_chunk decodes (default: about DECODES_PER_CHUNK
    pairs), so memory stays bounded for any k, with a running logsumexp over the chunks. y: labels for
    conditional families (p(x | y)).
    """
    require_posterior(model)
    model.eval()
    per_chunk = samples_per_chunk or max(1, DECODES_PER_CHUNK // batch_images)
    out = []
    for start in range(0, x.shape[0], batch_images):
        xb = x[start : start + batch_images]  # (B, ...)
        yb = None if y is None else y[start : start + batch_images]
        mu, logvar = model.posterior(xb, yb)  # (B, D)
        std = (0.5 * logvar).exp()
        log_q_const = -0.5 * (logvar + LOG_2PI).sum(1)  # (B,): log q(z|x) without its eps^2 part
        running = torch.full((xb.shape[0],), -math.inf, device=xb.device)
        for s0 in range(0, k, per_chunk):
            s = min(per_chunk, k - s0)
            eps = torch.randn(s, *mu.shape, device=mu.device)  # (s, B, D)
            z = mu + eps * std
            labels = None if yb is None else yb.repeat(s)  # (s*B,) matching z's (s, B) order
            logits = model.decode(z.reshape(-1, z.shape[-1]), labels)  # (s*B, ...)
            log_px = -model.likelihood.nll_of_draws(logits.view(s, xb.shape[0], *logits.shape[1:]).float(), xb)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)  # (s, B)
            log_qz = log_q_const - 0.5 * eps.pow(2).sum(-1)  # (s, B)
            chunk = torch.logsumexp(log_px + log_pz - log_qz, dim=0)  # (B,)
            running = torch.logaddexp(running, chunk)
        out.append(-(running - math.log(k)))
    return torch.cat(out)
