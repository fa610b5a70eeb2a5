"""Pictures of a model written once against the model interface: reconstructions, manifolds, grids, samples."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aelab.data.base import Split
from aelab.models.base import Autoencoder
from aelab.viz.images import grid


@torch.no_grad()
def reconstruction_grid(model: Autoencoder, x: Tensor, y: Tensor | None = None, per_row: int = 8) -> Tensor:
    """Rows alternate inputs and their reconstructions."""
    recon = model.reconstruct(x, y)
    rows = []
    for start in range(0, x.shape[0], per_row):
        rows += [x[start : start + per_row], recon[start : start + per_row]]
    return grid(torch.cat(rows), nrow=per_row)


@torch.no_grad()
def latent_codes(model: Autoencoder, split: Split, limit: int = 2000, batch_size: int = 1000) -> tuple[Tensor, Tensor | None]:
    """Deterministic codes (N, D) and labels (N,) of the first `limit` examples of a split."""
    codes, labels = [], []
    for batch in split.batches(batch_size):
        codes.append(model.encode(batch.x, batch.y).float().cpu())
        if batch.y is not None:
            labels.append(batch.y.cpu())
        if sum(len(c) for c in codes) >= limit:
            break
    z = torch.cat(codes)[:limit]
    return z, (torch.cat(labels)[:limit] if labels else None)


def project_2d(codes: Tensor) -> tuple[Tensor, str]:
    """Codes as 2-D points: as they are for D <= 2, else their first two principal components."""
    if codes.shape[1] == 1:
        return torch.cat([codes, torch.zeros_like(codes)], dim=1), "z"
    if codes.shape[1] == 2:
        return codes, "z"
    centred = codes - codes.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    return centred @ v[:, :2], "PCA of z"


def manifold_figure(codes: Tensor, labels: Tensor | None, class_names: list[str] | None = None):
    """Scatter of the codes coloured by label (matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, how = project_2d(codes)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6)
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7,
                        vmin=-0.5, vmax=max(9.5, float(labels.max()) + 0.5))
        classes = sorted(set(labels.tolist()))
        handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(c)),
                              label=class_names[c] if class_names else str(c)) for c in classes]
        ax.legend(handles=handles, fontsize=7, markerscale=1.2, loc="best", framealpha=0.7)
    ax.set_title(f"latent manifold ({how}, {codes.shape[1]}-D codes)")
    ax.set_xlabel(f"{how}[0]")
    ax.set_ylabel(f"{how}[1]")
    fig.tight_layout()
    return fig


def latent_axes(model: Autoencoder, codes: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
    """Grid coordinates for a 2-D latent plane: prior quantiles if the model has a prior, else the codes' range."""
    if model.has_prior or codes is None:
        probs = torch.linspace(0.05, 0.95, n)
        axis = torch.distributions.Normal(0.0, 1.0).icdf(probs)
        return axis, axis
    lo, hi = torch.quantile(codes, 0.01, dim=0), torch.quantile(codes, 0.99, dim=0)
    return torch.linspace(float(lo[0]), float(hi[0]), n), torch.linspace(float(lo[1]), float(hi[1]), n)


@torch.no_grad()
def latent_grid(model: Autoencoder, codes: Tensor | None = None, n: int = 15, y: Tensor | None = None) -> Tensor:
    """Decode an n x n grid of the 2-D latent plane (rows: z[1] from high to low, columns: z[0])."""
    xs, ys = latent_axes(model, codes, n)
    zz = torch.stack(torch.meshgrid(ys.flip(0), xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    images = model.likelihood.mean(model.decode(zz.to(model.device), y))
    return grid(images, nrow=n, pad=1)


@torch.no_grad()
def prior_samples(model: Autoencoder, n: int = 64) -> Tensor:
    return grid(model.sample(n), nrow=int(math.ceil(math.sqrt(n))))
