"""Code priors an adversarial AE can match: gaussian, uniform, a grid of uniform patches, a Gaussian mixture."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.errors import UserError

PRIORS = ("gaussian", "uniform", "grid", "mixture")
PATCH = 0.5  # grid: side of each uniform patch as a fraction of its lattice cell (gaps keep the patches apart)
MODE_RADIUS, MODE_STD = 2.0, 0.3  # mixture: modes on a circle of this radius in (z0, z1)


class LatentPrior:
    """Samples (n, dim) codes; `regions` classes can each be given their own part (grid cell, mixture mode)."""

    def __init__(self, name: str, dim: int, num_modes: int | None = None, grid_size: int = 3) -> None:
        if name not in PRIORS:
            raise UserError("model.prior", f"unknown value {name!r}", "one of: " + ", ".join(PRIORS))
        if name == "grid" and dim != 2:
            raise UserError("model.prior", f"grid is a 2-D lattice, latent_dim is {dim}", "latent_dim=2")
        if name == "mixture" and not num_modes:
            raise UserError("model.prior", "mixture has one mode per class, but the data has no labels",
                            "labelled data, or model.prior=gaussian|uniform|grid")
        self.name, self.dim, self.grid_size = name, int(dim), int(grid_size)
        self.regions: int | None = {"grid": self.grid_size**2, "mixture": num_modes}.get(name)

    def sample(self, n: int, y: Tensor | None, device: torch.device,
               generator: torch.Generator | None = None) -> Tensor:  # (n, dim)
        """Draws from the whole prior, or with labels y (n,) from each label's region."""
        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator).to(device)

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=generator).to(device)

        if self.name == "gaussian":
            return randn(n, self.dim)
        if self.name == "uniform":
            return rand(n, self.dim) * 2 - 1
        region = (y.to(device) if y is not None else (rand(n) * self.regions).long().clamp_max(self.regions - 1))
        if self.name == "grid":  # cells of side 2/g tile [-1, 1]^2; a patch of PATCH of that side sits in each
            side = 2.0 / self.grid_size
            centre = torch.stack([region % self.grid_size, region // self.grid_size], 1).float() * side - 1 + side / 2
            return centre + (rand(n, 2) - 0.5) * side * PATCH
        return self.mode_centres(device)[region] + MODE_STD * randn(n, self.dim)

    def mode_centres(self, device: torch.device) -> Tensor:  # (K, dim): evenly on a circle in (z0, z1)
        k = int(self.regions or 1)
        angle = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
        centres = torch.zeros(k, self.dim)
        if self.dim == 1:
            centres[:, 0] = torch.linspace(-MODE_RADIUS, MODE_RADIUS, k)
        else:
            centres[:, 0], centres[:, 1] = MODE_RADIUS * angle.cos(), MODE_RADIUS * angle.sin()
        return centres.to(device)

    def quantile(self, p: Tensor) -> Tensor:
        """Quantiles of one coordinate (the first) under the prior, for decoded latent grids."""
        if self.name == "gaussian":
            return torch.distributions.Normal(0.0, 1.0).icdf(p)
        if self.name in ("uniform", "grid"):
            return p * 2 - 1
        draws = self.sample(20000, None, torch.device("cpu"), torch.Generator().manual_seed(0))[:, 0]
        return torch.quantile(draws, p)
