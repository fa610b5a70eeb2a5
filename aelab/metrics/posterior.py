"""What a posterior q(z|x) tells (VAE-type families): ELBO terms, KL per dimension, active units, IS-NLL."""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.data.base import Split
from aelab.metrics.likelihood import importance_sampled_nll, require_posterior
from aelab.models.vae import ACTIVE_UNIT_THRESHOLD, gaussian_kl


@torch.no_grad()
def neg_elbo(model, x: Tensor, y: Tensor | None = None, samples: int = 1) -> tuple[Tensor, Tensor]:
    """Per example (B,): the reconstruction NLL averaged over `samples` draws z ~ q(z|x), and the KL (beta = 1)."""
    require_posterior(model)
    return model.elbo_terms(x, y, samples)  # the family's own prior and posterior (one or more layers)


@torch.no_grad()
def posterior_metrics(model, split: Split, batch_size: int, iw_samples: int = 0,
                      iw_examples: int | None = None) -> dict[str, float]:
    """ELBO terms per example (nats; beta = 1), KL of each dimension, active units, and the IS-NLL with k samples."""
    count, recon_sum, kl_sum = 0, 0.0, 0.0
    kl_dims = mu_sum = mu_sq = None
    nll_sum, nll_count = 0.0, 0
    for batch in split.batches(batch_size):
        recon, kl = neg_elbo(model, batch.x, batch.y)
        mu, logvar = (t.float() for t in model.posterior(batch.x, batch.y))
        if getattr(model, "prior_is_standard_normal", True):  # else the KL to N(0, 1) is not the model's KL
            per_dim = gaussian_kl(mu, logvar).sum(0).double()  # (D,)
            kl_dims = per_dim if kl_dims is None else kl_dims + per_dim
        mu_sum = mu.sum(0).double() if mu_sum is None else mu_sum + mu.sum(0).double()
        mu_sq = mu.pow(2).sum(0).double() if mu_sq is None else mu_sq + mu.pow(2).sum(0).double()
        recon_sum, kl_sum = recon_sum + float(recon.sum()), kl_sum + float(kl.sum())
        if iw_samples > 0 and (iw_examples is None or nll_count < iw_examples):
            take = len(batch) if iw_examples is None else min(len(batch), iw_examples - nll_count)
            nll = importance_sampled_nll(model, batch.x[:take], k=iw_samples,
                                         y=None if batch.y is None else batch.y[:take])
            nll_sum, nll_count = nll_sum + float(nll.sum()), nll_count + take
        count += len(batch)
    n = max(count, 1)
    variance = (mu_sq / n - (mu_sum / n).pow(2)) * n / max(n - 1, 1)  # Cov_x(E[z|x]) per dimension
    out = {"elbo_recon": recon_sum / n, "elbo_kl": kl_sum / n, "neg_elbo": (recon_sum + kl_sum) / n,
           "active_units": float((variance > ACTIVE_UNIT_THRESHOLD).sum())}
    out.update({f"kl_dim/{d:02d}": float(v) / n for d, v in enumerate(kl_dims if kl_dims is not None else [])})
    if nll_count:
        out["nll_iw"] = nll_sum / nll_count
    return out
