"""Sliced Wasserstein distance (Rabin et al. 2011; Kolouri et al. 2019): the distance between two point clouds
averaged over random one-dimensional projections, where optimal transport is sorting.

For directions theta_l on the unit sphere, SW_p^p(a, b) ~= mean_l mean_i |sort(a theta_l)_i - sort(b theta_l)_i|^p:
in one dimension the optimal plan pairs the i-th smallest of each set. The cost is a sort per direction, not the
cubic optimal-transport solve, and the gradient reaches every point through its place in the sort.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.nets.precision import full_precision


def random_directions(n: int, dim: int, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> Tensor:  # (n, dim) unit rows
    """n directions uniform on the sphere S^{dim-1}: normalised Gaussian draws."""
    theta = torch.randn(n, dim, generator=generator).to(device)
    return theta / theta.norm(dim=1, keepdim=True)


def sliced_wasserstein(a: Tensor, b: Tensor, directions: Tensor, p: float = 2.0) -> Tensor:  # (N, D), (N, D), (L, D) -> ()
    """The Monte-Carlo SW_p^p between the empirical distributions of a's and b's rows (equally many of each).

    In fp32 under autocast: sorting bf16 projections would pair points by rounded values."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein pairs sorted points: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    with full_precision(a, b, directions) as (a, b, directions):
        gap = (a @ directions.T).sort(0).values - (b @ directions.T).sort(0).values  # (N, L)
        return gap.abs().pow(p).mean()


def gaussian_sliced_w2(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor,
                       directions: Tensor) -> Tensor:  # (D,), (D, D), (D,), (D, D), (L, D) -> ()
    """SW_2^2 between two Gaussians over the given directions, in closed form: each projection is a 1-D Gaussian,
    and W2^2 of N(m1, s1^2), N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2."""
    dmu = directions @ (mean_a - mean_b)  # (L,)
    s_a = ((directions @ cov_a) * directions).sum(1).sqrt()  # (L,): sqrt(theta' S theta)
    s_b = ((directions @ cov_b) * directions).sum(1).sqrt()
    return (dmu.square() + (s_a - s_b).square()).mean()
