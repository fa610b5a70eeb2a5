"""MIG as Chen et al. (2018) estimate it in their reference code, on the whole factor grid.

aelab's `mig` (aelab/metrics/disentanglement.py) is disentanglement_lib's, the estimator of Locatello et al.
(2019): posterior means of 10,000 random grid points binned into 20 bins per dimension. The β-TCVAE paper
computes MIG otherwise (rtqichen/beta-tcvae, `disentanglement_metrics.py` and `metric_helpers/mi_metric.py`), and
its numbers are only comparable with numbers computed the same way:

  - every image of the grid is encoded, and one code z_n is drawn from each posterior q(z|x_n) = N(mu_n, var_n);
  - H(z_k) is estimated on 10,000 of those codes as -mean_s log q(z_sk), where q(z_k) = (1/N) sum_n q(z_k|x_n) is
    the mixture of every image's posterior (no bins);
  - H(z_k | v_j = i) likewise over the images with factor j at value i (10,000 of their codes, their mixture), and
    H(z_k | v_j) is the mean over the values i;
  - I(z_k; v_j) = H(z_k) - H(z_k | v_j), clamped at 0 and divided by log(number of values of j); the gap is the
    largest minus the second largest over k, and MIG the mean gap over the chosen factors. Chen et al. leave
    dSprites' shape out: scale, orientation, posX and posY (their `factor_entropies = [6, 40, 32, 32]`).

The cost is what it is: every entropy is 10,000 codes against every mixture component, 5 x 10,000 x 737,280 x 10
Gaussian densities for a 10-D dSprites model (the conditional entropies of one factor together cost as much as the
marginal one): about 4 minutes on 2 CPU cores, blocks of float32 differences that stay in the caches, where
torch's exp below -87 alone (its slow path, 30-100x on x86) had made it 39. Each code's log-density under its own
posterior, one term of its sum, shifts the sum, so it neither overflows nor underflows whatever the posteriors'
widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aelab.metrics.disentanglement import FactorSource
from aelab.models.iwae import log_normal

Posterior = Callable[[Tensor], tuple[Tensor, Tensor]]  # images (B, C, H, W) in [0, 1] -> mu, log-variance (B, D)
LOG_2PI = math.log(2 * math.pi)
FACTOR_SETS = ("all", "chen")  # every factor, or those Chen et al. average over (FactorSpec.chen_mig_factors)
EXP_FLOOR = -80.0  # a term this far (in log-density) below the code's own counts as e^-80: nothing beside e^0


def mixture_entropies(codes: Tensor, own: Tensor, mu: Tensor, log_var: Tensor, *, rows: int = 64,
                      cols: int = 2048) -> Tensor:
    """Per dimension k: -mean_s log (1/N) sum_n N(codes_sk; mu_nk, exp(log_var_nk)), in float64 (K,).

    codes (S, K) were drawn from the posteriors of the points `own` (S,) indexes into mu, log_var (N, K). The
    densities are computed as differences (z - mu), never by expanding the square, whose terms cancel in float32 for
    narrow posteriors; blocks of rows x cols stay in the caches."""
    num, dims = mu.shape
    # (S, K): each code's own term, <= the log of its sum (log_normal sums over a last axis: here one of size 1)
    shift = log_normal(codes[..., None], mu[own, :, None], log_var[own, :, None])
    scale = torch.exp(-log_var).mul_(-0.5)  # -1 / (2 var)
    offset = log_var.add(LOG_2PI).mul_(-0.5)  # log of the density's normaliser
    logs = torch.empty(codes.shape, dtype=torch.float64)
    block = torch.empty(rows * cols)
    for k in range(dims):
        m, a, c = mu[:, k].contiguous(), scale[:, k].contiguous(), offset[:, k].contiguous()
        for s in range(0, len(codes), rows):
            z, lift = codes[s : s + rows, k, None], shift[s : s + rows, k, None]
            total = torch.zeros(len(z), dtype=torch.float64)
            for n in range(0, num, cols):
                width = min(cols, num - n)
                d = torch.sub(z, m[n : n + width], out=block[: len(z) * width].view(len(z), width))
                # exp's slow path below -87 (30-100x on x86) is clamped away: e^-80 per term is nothing beside the
                # code's own term, e^0
                d.square_().mul_(a[n : n + width]).add_(c[n : n + width]).sub_(lift).clamp_(min=EXP_FLOOR).exp_()
                total += d.sum(1).double()
            logs[s : s + rows, k] = total.log_() + shift[s : s + rows, k].double()
    return math.log(num) - logs.mean(0)


def _entropies(codes: Tensor, mu: Tensor, log_var: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    """H(z_k) under the mixture of these points' posteriors, on `samples` of their codes (all when fewer)."""
    picked = torch.randperm(len(codes), generator=generator)[:samples]
    return mixture_entropies(codes[picked], picked, mu, log_var)


def sampled_mig_gaps(mu: Tensor, log_var: Tensor, sizes: Sequence[int], factors: Sequence[int], *,
                     samples: int = 10_000, seed: int = 0) -> dict[int, float]:
    """Each chosen factor's gap, Chen et al.'s way. mu, log_var (N, K) are the posteriors of the whole grid in its
    row-major order (the last factor varying fastest), N = prod(sizes)."""
    num, dims = mu.shape
    if num != math.prod(sizes):
        raise ValueError(f"{num} posteriors for a grid of {math.prod(sizes)} combinations")
    if dims < 2:
        raise ValueError("MIG needs at least two code dimensions")
    generator = torch.Generator().manual_seed(seed)
    mu, log_var = mu.float(), log_var.float()
    codes = mu + torch.randn(mu.shape, generator=generator) * torch.exp(0.5 * log_var)
    marginal = _entropies(codes, mu, log_var, samples, generator)
    grid = [t.view(*sizes, dims) for t in (codes, mu, log_var)]
    gaps = {}
    for j in factors:
        conditional = torch.zeros(dims, dtype=torch.float64)
        for value in range(sizes[j]):
            part = [t.select(j, value).reshape(-1, dims) for t in grid]
            conditional += _entropies(*part, samples, generator) / sizes[j]
        informations = (marginal - conditional).clamp(min=0).sort(descending=True).values / math.log(sizes[j])
        gaps[j] = float(informations[0] - informations[1])
    return gaps


@torch.no_grad()
def grid_posteriors(posterior: Posterior, source: FactorSource, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """mu, log-variance (N, K) of every combination of the source's factors, in row-major grid order."""
    axes = [torch.arange(k) for k in source.sizes]
    grid = torch.cartesian_prod(*axes).view(-1, len(axes))
    found = [posterior(source.render(grid[first : first + batch_size])) for first in range(0, len(grid), batch_size)]
    return (torch.cat([m.detach().float().cpu() for m, _ in found]),
            torch.cat([v.detach().float().cpu() for _, v in found]))


def sampled_mig_score(posterior: Posterior, source: FactorSource, factors: Sequence[int], *, samples: int = 10_000,
                      seed: int = 0, batch_size: int = 1024) -> dict[int, float]:
    """Each chosen factor's gap (MIG is their mean) on the whole grid, encoded with `posterior`."""
    mu, log_var = grid_posteriors(posterior, source, batch_size)
    return sampled_mig_gaps(mu, log_var, source.sizes, factors, samples=samples, seed=seed)
