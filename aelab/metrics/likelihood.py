"""Importance-sampled negative log-likelihood (the IWAE bound) for families with a posterior q(z|x)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.errors import UserError

# (image, sample) pairs decoded at once: big enough that the per-op overhead of the likelihood's passes is
# small beside the matmuls, small enough that the logits (12.5 MB at 784 pixels) stay in the last-level cache.
# Measured, 400 images x k=1000 on a 2-core AMD EPYC (32 MB L3): 1k 2.31 s, 2k 2.22, 4k 2.15, 8k 2.18;
# 10k pairs (31 MB of logits) ran 25% slower than 2k on an Intel Xeon.
DECODES_PER_CHUNK = 4_000


def require_posterior(model) -> None:
    if not getattr(model, "has_posterior", False):
        raise UserError("model", f"{type(model).__name__} has no posterior q(z|x)",
                        "importance sampling needs a VAE-type family")


@torch.no_grad()
def importance_sampled_nll(model, x: Tensor, k: int = 1000, batch_images: int = 100,
                           samples_per_chunk: int | None = None, y: Tensor | None = None) -> Tensor:  # (N,) nats
    """-log p(x) ~= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); tight as k grows.

    The family draws z and weighs it (model.importance_sampler: its posterior and prior, one or more
    stochastic layers); this function adds the reconstruction likelihood and averages the weights. Works in
    blocks of batch_images x samples_per_chunk decodes (default: about DECODES_PER_CHUNK pairs), so memory
    stays bounded for any k, with a running logsumexp over the chunks. y: labels for conditional families (p(x | y)).
    """
    require_posterior(model)
    model.eval()
    per_chunk = samples_per_chunk or max(1, DECODES_PER_CHUNK // batch_images)
    out = []
    for start in range(0, x.shape[0], batch_images):
        xb = x[start : start + batch_images]  # (B, ...)
        yb = None if y is None else y[start : start + batch_images]
        draw = model.importance_sampler(xb, yb)  # encodes xb once
        running = torch.full((xb.shape[0],), -math.inf, device=xb.device)
        for s0 in range(0, k, per_chunk):
            logits, log_ratio = draw(min(per_chunk, k - s0))  # (s, B, ...), (s, B)
            log_w = -model.likelihood.nll_of_draws(logits.float(), xb, consume=True)  # (s, B); logits not needed after
            log_w += log_ratio
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))  # (B,)
        out.append(-(running - math.log(k)))
    return torch.cat(out)
