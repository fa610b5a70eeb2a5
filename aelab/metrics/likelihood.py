"""Importance-sampled negative log-likelihood (the IWAE bound) for families with a Gaussian posterior."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.errors import UserError

LOG_2PI = math.log(2 * math.pi)


@torch.no_grad()
def importance_sampled_nll(model, x: Tensor, k: int = 1000, batch_images: int = 100,
                           samples_per_chunk: int = 100) -> Tensor:  # (N, ...) -> (N,) nats per image
    """-log p(x) ~= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); tight as k grows.

    Works in blocks of batch_images x samples_per_chunk decodes, so memory stays
    bounded for any k, with a running logsumexp over the chunks.
    """
    posterior = getattr(model, "posterior", None)
    if posterior is None:
        raise UserError("model", f"{type(model).__name__} has no Gaussian posterior q(z|x)",
                        "importance sampling needs a VAE-type family")
    model.eval()
    out = []
    for start in range(0, x.shape[0], batch_images):
        xb = x[start : start + batch_images]  # (B, ...)
        mu, logvar = posterior(xb)  # (B, D)
        std = (0.5 * logvar).exp()
        log_q_const = -0.5 * (logvar + LOG_2PI).sum(1)  # (B,): log q(z|x) without its eps^2 part
        running = torch.full((xb.shape[0],), -math.inf, device=xb.device)
        for s0 in range(0, k, samples_per_chunk):
            s = min(samples_per_chunk, k - s0)
            eps = torch.randn(s, *mu.shape, device=mu.device)  # (s, B, D)
            z = mu + eps * std
            logits = model.decode(z.reshape(-1, z.shape[-1]))  # (s*B, ...)
            target = xb.unsqueeze(0).expand(s, *xb.shape).reshape(logits.shape)
            log_px = -model.likelihood.nll(logits, target).view(s, -1)  # (s, B)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)  # (s, B)
            log_qz = log_q_const - 0.5 * eps.pow(2).sum(-1)  # (s, B)
            chunk = torch.logsumexp(log_px + log_pz - log_qz, dim=0)  # (B,)
            running = torch.logaddexp(running, chunk)
        out.append(-(running - math.log(k)))
    return torch.cat(out)
