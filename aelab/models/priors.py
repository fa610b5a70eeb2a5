"""Code priors an adversarial AE can match: gaussian, uniform, a grid of uniform patches, a Gaussian mixture.

The grid tiles [-1, 1]^2 with grid_size x grid_size cells, a uniform patch in the middle of each; `grid_extra`
more patches sit in a row below the lattice, centred under it (the course's tenth class under a 3x3 grid).
Region r < grid_size**2 is cell (r % grid_size, r // grid_size) counted from the bottom left; the extra row's
patches follow, left to right.
"""

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

    def __init__(self, name: str, dim: int, num_modes: int | None = None, grid_size: int = 3,
                 grid_extra: int = 0) -> None:
        if name not in PRIORS:
            raise UserError("model.prior", f"unknown value {name!r}", "one of: " + ", ".join(PRIORS))
        if name == "grid" and dim != 2:
            raise UserError("model.prior", f"grid is a 2-D lattice, latent_dim is {dim}", "latent_dim=2")
        if name == "mixture" and not num_modes:
            raise UserError("model.prior", "mixture has one mode per class, but the data has no labels",
                            "labelled data, or model.prior=gaussian|uniform|grid")
        check_grid_extra(name, int(grid_size), int(grid_extra), "model")
        self.name, self.dim, self.grid_size, self.grid_extra = name, int(dim), int(grid_size), int(grid_extra)
        self.regions: int | None = {"grid": self.grid_size**2 + self.grid_extra, "mixture": num_modes}.get(name)

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
        if self.name == "grid":  # a patch of PATCH of its cell's side, in the middle of the region's cell
            side = 2.0 / self.grid_size
            return self.grid_centres(device)[region] + (rand(n, 2) - 0.5) * side * PATCH
        return self.mode_centres(device)[region] + MODE_STD * randn(n, self.dim)

    def grid_centres(self, device: torch.device) -> Tensor:  # (regions, 2): the lattice's cells, then the row below
        g, side = self.grid_size, 2.0 / self.grid_size
        cell = torch.arange(g * g)
        lattice = torch.stack([cell % g, cell // g], 1).float() * side - 1 + side / 2
        offset = torch.arange(self.grid_extra).float() - (self.grid_extra - 1) / 2  # centred: 0 for a single patch
        below = torch.stack([offset * side, torch.full_like(offset, -1 - side / 2)], 1)
        return torch.cat([lattice, below]).to(device)

    def bounds(self) -> tuple[Tensor, Tensor]:  # (dim,), (dim,): the box around a bounded prior's support
        low, high = -torch.ones(self.dim), torch.ones(self.dim)
        if self.name == "grid" and self.grid_extra:
            low[1] = -1 - 2.0 / self.grid_size  # the row below the lattice is one cell high
        return low, high

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
        """Quantiles (P,) -> (P, dim) of each coordinate, for decoded latent grids and traversals. The grid's are
        those of the box around its patches, so a decoded grid spans every patch and the gaps between them."""
        if self.name == "gaussian":
            return torch.distributions.Normal(0.0, 1.0).icdf(p)[:, None].expand(-1, self.dim)
        if self.name in ("uniform", "grid"):
            low, high = self.bounds()
            return low + p[:, None] * (high - low)
        draws = self.sample(20000, None, torch.device("cpu"), torch.Generator().manual_seed(0))  # (20000, dim)
        return torch.quantile(draws, p, dim=0)  # (P, dim)


def check_prior_options(options: dict, key: str) -> None:
    """A family's prior keys (prior, grid_size, grid_extra) against its latent_dim, in one line each: what the AAE and
    the SWAE, which draw from these priors, both check before building."""
    latent_dim = options.get("latent_dim")
    if options.get("prior") == "grid" and latent_dim != 2:
        raise UserError(f"{key}.prior", f"grid is a 2-D lattice of uniform patches, latent_dim is {latent_dim}",
                        f"latent_dim=2, or {key}.prior=gaussian|uniform|mixture")
    check_grid_extra(str(options["prior"]), int(options["grid_size"]), int(options["grid_extra"]), key)


def check_grid_extra(prior: str, grid_size: int, grid_extra: int, key: str) -> None:
    """grid_extra needs the grid prior, and a row below the lattice holds at most grid_size patches."""
    if grid_extra and prior != "grid":
        raise UserError(f"{key}.grid_extra", f"only the grid prior has patches below its lattice, prior is {prior}",
                         f"{key}.grid_extra=0, or {key}.prior=grid")
    if not 0 <= grid_extra <= grid_size:
        raise UserError(f"{key}.grid_extra", f"a row below the {grid_size}x{grid_size} lattice holds 0 to "
                         f"{grid_size} patches, got {grid_extra}", f"0 <= {key}.grid_extra <= {key}.grid_size")
