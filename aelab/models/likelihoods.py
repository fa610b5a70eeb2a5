"""Reconstruction likelihoods: turn decoder logits into a mean image and a per-image loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.errors import UserError


GROUP = 16  # factors in (1, 2] multiplied before one log: at most 2**16, so no overflow


def sum_softplus(logits: Tensor) -> Tensor:  # (..., P) -> (...)
    """sum softplus(l) over the last axis as relu(l) + log prod (1 + exp(-|l|)) in groups of GROUP.

    One log per GROUP entries instead of one per entry: CPU log is several times slower than exp,
    and this sum is most of the cost of importance sampling (same accuracy as F.softplus in fp32).
    """
    factors = logits.abs().neg_().exp_().add_(1)  # (..., P) in (1, 2]
    pad = -factors.shape[-1] % GROUP
    if pad:
        factors = F.pad(factors, (0, pad), value=1.0)
    grouped = factors.view(*factors.shape[:-1], -1, GROUP).prod(-1)  # (..., P / GROUP)
    return grouped.log_().sum(-1) + logits.clamp_min(0).sum(-1)


class Bernoulli:
    """Pixels in [0, 1] as Bernoulli means; BCE with logits is the numerically stable fused form."""

    name = "bernoulli"
    support = (0.0, 1.0)  # the data range this likelihood models
    EPS = 1e-3  # floor on probabilities given by logits_of: a linear reconstruction outside (0, 1) costs a bounded amount

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def logits_of(self, mean: Tensor) -> Tensor:
        """Logits whose mean is `mean` (clipped into the open unit interval): for decoders that output data space."""
        return torch.logit(mean.clamp(self.EPS, 1.0 - self.EPS))

    def nll(self, logits: Tensor, x: Tensor) -> Tensor:  # (B,) summed over pixels
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def batch_nll(self, logits: Tensor, x: Tensor) -> Tensor:  # scalar: mean over images
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]

    def nll_of_draws(self, logits: Tensor, x: Tensor) -> Tensor:  # (S, B, *shape), (B, *shape) -> (S, B)
        """nll of S decodes of each example, without copying x S times: sum softplus(l) - x . l."""
        flat = logits.flatten(2)  # (S, B, P)
        return sum_softplus(flat) - torch.einsum("sbp,bp->sb", flat, x.flatten(1).to(flat.dtype))


class Gaussian:
    """Unit-variance Gaussian: half the summed squared error per image (the NLL up to a constant)."""

    name = "gaussian"
    support = None  # unbounded

    def mean(self, logits: Tensor) -> Tensor:
        return logits

    def logits_of(self, mean: Tensor) -> Tensor:
        return mean

    def nll(self, logits: Tensor, x: Tensor) -> Tensor:  # (B,)
        return 0.5 * F.mse_loss(logits, x, reduction="none").flatten(1).sum(1)

    def batch_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        return 0.5 * F.mse_loss(logits, x, reduction="sum") / x.shape[0]

    def nll_of_draws(self, logits: Tensor, x: Tensor) -> Tensor:  # (S, B, *shape), (B, *shape) -> (S, B)
        return 0.5 * (logits.flatten(2) - x.flatten(1)).pow_(2).sum(-1)


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
Likelihood = Bernoulli | Gaussian


def make_likelihood(name: str) -> Likelihood:
    if name not in LIKELIHOODS:
        raise UserError("model.likelihood", f"unknown value {name!r}", "one of: " + ", ".join(LIKELIHOODS))
    return LIKELIHOODS[name]()
