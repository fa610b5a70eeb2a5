"""VQ-VAE (van den Oord et al. 2017): the encoder's grid of vectors, each snapped to the nearest codebook vector.

On `arch=conv` the grid is the conv stack's feature map (one cell per position, 2x2 for 28x28 images with the
default four blocks, 7x7 with arch.channels=[32,64]); a 1x1 conv makes each cell an `embedding_dim` vector.
On an arch without a spatial grid (mlp) the code is one row of latent_dim / embedding_dim vectors.

`latent_dim` keeps its meaning for every family: the size of the code `encode` returns, here the flattened
quantised grid (cells x embedding_dim, cell by cell). `model.embedding_dim=null` derives the vector size
from it (latent_dim / cells); a set embedding_dim must agree with it (the error says the latent_dim to use).

Training: straight-through gradients (the decoder's gradient at the quantised code is passed to the
encoder output), a commitment term beta * ||z_e - sg[e]||^2 that keeps the encoder near its codes, and
either exponential-moving-average codebook updates (ema=true, the paper's appendix; decay `decay`) or the
codebook term ||sg[z_e] - e||^2 (ema=false). Squared distances are summed over the grid per example, like the
reconstruction term. Codes no vector chose for `restart_after` steps are restarted on encoder outputs of the
batch (restart_dead), drawn in proportion to their squared distance from their code (k-means++ seeding), so
a restart lands where the codebook fits worst; with restarts on, the first training batch seeds every code
this way (without, the codebook starts as N(0, 1) draws, as in Sonnet's reference implementation).

There is no prior during training (the paper keeps it uniform): the two-stage prior is a PixelCNN over the
grid of code indices, fitted afterwards (aelab/models/pixelcnn_prior.py; `aelab fit-prior prior=pixelcnn`).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Autoencoder, Diagnostics, NoPriorError
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.nets.conv import ConvArch, code_grid, grid_nets
from aelab.nets.precision import full_precision
from aelab.schema import OneOf, Range

LIKELIHOOD_NAMES = tuple(LIKELIHOODS)
SMOOTHING = 1e-5  # Laplace smoothing of the EMA cluster sizes: a code nobody chose never divides by zero


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class Codebook(nn.Module):
    """K vectors of size D; nearest-neighbour assignment, EMA updates and restarts of unused codes."""

    def __init__(self, size: int, dim: int, ema: bool, decay: float, restart_dead: bool, restart_after: int) -> None:
        super().__init__()
        self.size, self.dim, self.ema, self.decay = size, dim, ema, decay
        self.restart_dead, self.restart_after = restart_dead, restart_after
        init = torch.randn(size, dim)  # N(0, 1), as Sonnet's VQ-VAE
        if ema:  # the EMA sets the vectors: no gradient, so buffers (as if each code had been chosen once)
            self.register_buffer("vectors", init)
            self.register_buffer("cluster_size", torch.ones(size))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.vectors = nn.Parameter(init)
        # training steps since each code was last chosen; with restarts every code starts out dead, so the first
        # training batch seeds the whole codebook from encoder outputs (random vectors far from them never win)
        start = restart_after if restart_dead else 0
        self.register_buffer("unused", torch.full((size,), start, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far

    @torch.no_grad()
    def nearest(self, rows: Tensor) -> tuple[Tensor, Tensor]:  # (N, D) -> indices (N,), squared distances (N,)
        with full_precision(rows, self.vectors) as (rows, vectors):  # fp32: bf16 distances tie and flip assignments
            d2 = rows.pow(2).sum(1, keepdim=True) - 2 * rows @ vectors.T + vectors.pow(2).sum(1)  # (N, K)
        d2, index = d2.min(1)
        return index, d2.clamp_min(0)

    @torch.no_grad()
    def update(self, rows: Tensor, index: Tensor, d2: Tensor) -> None:
        """After a training step's assignment of rows (N, D): the EMA of the codebook, then restarts."""
        rows = rows.float()
        counts = torch.bincount(index, minlength=self.size).float()  # (K,)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, index, rows)  # (K, D)
            if _distributed():  # every rank keeps the same codebook
                dist.all_reduce(counts)
                dist.all_reduce(sums)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + SMOOTHING) / (total + self.size * SMOOTHING) * total
            self.vectors.copy_(self.embed_sum / smoothed.unsqueeze(1))
        elif _distributed():
            dist.all_reduce(counts)
        self.unused.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_dead:
            self._restart(rows, d2)

    def _restart(self, rows: Tensor, d2: Tensor) -> None:
        dead = (self.unused >= self.restart_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        dead = dead[: rows.shape[0]]
        pick = torch.multinomial(d2.float() + 1e-12, dead.numel(), replacement=False)  # k-means++ seeding
        new = rows[pick].contiguous()  # (R, D)
        if _distributed():
            dist.broadcast(new, 0)
        self.vectors.data[dead] = new.to(self.vectors.dtype)
        if self.ema:
            self.embed_sum[dead] = new
            self.cluster_size[dead] = 1.0
        self.unused[dead] = 0
        self.restarts.add_(dead.numel())


class VQVAE(Autoencoder):
    directions = {"codebook_perplexity": "max", "codes_used": "max", "code_restarts": None}  # dead codes waste capacity
    has_prior = False  # the prior is fitted after training: pixelcnn_prior.fit_pixelcnn
    data_kinds = ("images",)  # it quantises a grid of image features

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 codebook_size: Annotated[int, Range(2, None)] = 512,
                 embedding_dim: Annotated[int | None, Range(1, None)] = None,
                 commitment: Annotated[float, Range(0, None)] = 0.25,
                 ema: bool = True,
                 decay: Annotated[float, Range(0, 1, high_open=True)] = 0.99,
                 restart_dead: bool = True,
                 restart_after: Annotated[int, Range(1, None)] = 100,
                 likelihood: Annotated[str, OneOf(LIKELIHOOD_NAMES)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.spatial = isinstance(arch, ConvArch)
        self.grid, self.embedding_dim = self._layout(arch, embedding_dim)
        self.codebook_size, self.commitment = int(codebook_size), float(commitment)
        self.codebook = Codebook(self.codebook_size, self.embedding_dim, bool(ema), float(decay),
                                 bool(restart_dead), int(restart_after))
        if self.spatial:
            self.encoder, self.decoder = grid_nets(arch, self.input_shape, self.embedding_dim)  # type: ignore[arg-type]
        else:
            self.encoder = arch.encoder(self.input_shape, self.latent_dim)
            self.decoder = arch.decoder(self.latent_dim, self.input_shape)

    def _layout(self, arch: Arch, embedding_dim: int | None) -> tuple[tuple[int, int], int]:
        """(h, w) of the code grid and the size of each vector, from the arch and latent_dim."""
        if self.spatial:
            h, w = code_grid(self.input_shape, arch.channels)  # type: ignore[attr-defined]
            cells = h * w
            if embedding_dim is None:
                if self.latent_dim % cells:
                    raise UserError("latent_dim", f"the code is the conv encoder's {h}x{w} grid of vectors: "
                                    f"{self.latent_dim} is not a multiple of its {cells} cells",
                                    f"latent_dim = {cells} x the vector size, e.g. {cells * 16} or {cells * 64}")
                return (h, w), self.latent_dim // cells
            if cells * embedding_dim != self.latent_dim:
                raise UserError("latent_dim", f"the {h}x{w} grid of model.embedding_dim={embedding_dim} vectors is "
                                f"a code of {cells * embedding_dim} numbers, not {self.latent_dim}",
                                f"latent_dim={cells * embedding_dim}, or model.embedding_dim=null to derive it")
            return (h, w), int(embedding_dim)
        size = self.latent_dim if embedding_dim is None else int(embedding_dim)
        if self.latent_dim % size:
            raise UserError("model.embedding_dim", f"an mlp code is a row of vectors: {size} does not divide "
                            f"latent_dim={self.latent_dim}", "a divisor of latent_dim, or null for one vector")
        return (1, self.latent_dim // size), size

    # ---- grids and flat codes ------------------------------------------------------------
    def flatten(self, grid: Tensor) -> Tensor:  # (B, D, h, w) -> (B, h * w * D), cell by cell
        return grid.permute(0, 2, 3, 1).reshape(grid.shape[0], -1)

    def unflatten(self, z: Tensor) -> Tensor:  # (B, h * w * D) -> (B, D, h, w)
        return z.reshape(z.shape[0], *self.grid, self.embedding_dim).permute(0, 3, 1, 2)

    def encoder_grid(self, x: Tensor) -> Tensor:  # (B, ...) -> (B, D, h, w): z_e, before quantisation
        return self.encoder(x) if self.spatial else self.unflatten(self.encoder(x))

    def decode_grid(self, grid: Tensor) -> Tensor:  # (B, D, h, w) -> (B, *input_shape) logits
        return self.decoder(grid) if self.spatial else self.decoder(self.flatten(grid))

    @torch.no_grad()
    def code_indices(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, ...) -> (B, h, w) int64
        rows = self.flatten(self.encoder_grid(x)).view(-1, self.embedding_dim)  # (B * h * w, D)
        return self.codebook.nearest(rows)[0].view(x.shape[0], *self.grid)

    def codes_from_indices(self, index: Tensor) -> Tensor:  # (B, h, w) int64 -> (B, latent_dim) flat codes
        return self.codebook.vectors[index].reshape(index.shape[0], -1)

    # ---- the interface --------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, latent_dim): the quantised grid
        return self.codes_from_indices(self.code_indices(x))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode_grid(self.unflatten(z))

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z_e = self.flatten(self.encoder_grid(self.corrupt(batch.x)))  # (B, h * w * D)
        rows = z_e.view(-1, self.embedding_dim)  # (B * h * w, D)
        index, d2 = self.codebook.nearest(rows.detach())
        quantised = self.codebook.vectors[index].view_as(z_e).to(z_e.dtype)  # (B, h * w * D)
        straight_through = z_e + (quantised - z_e).detach()  # forward: the codes; backward: identity to z_e
        n = z_e.shape[0]
        terms = {"recon": self.likelihood.batch_nll(self.decode(straight_through), batch.x),
                 "commitment": self.commitment * (z_e - quantised.detach()).pow(2).sum() / n}
        if not self.codebook.ema:
            terms["codebook"] = (quantised - z_e.detach()).pow(2).sum() / n
        if self.training:
            self.codebook.update(rows.detach(), index, d2)
        return terms

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        raise NoPriorError("model", "vq_vae has no prior of its own: its prior over the code grid is fitted after "
                           "training (two-stage)", "aelab fit-prior run=<run> prior=pixelcnn, then aelab sample run=<run>")

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Codebook usage on these examples: perplexity (e^entropy of the code frequencies; K = all used
        equally), the fraction of codes chosen at least once (codes_used), the mean squared quantisation error,
        and the restarts so far (code_restarts; with restarts on, the first batch's seeding of every code counts)."""
        out = super().diagnostics(batch)
        rows = self.flatten(self.encoder_grid(batch.x)).view(-1, self.embedding_dim).float()
        index, d2 = self.codebook.nearest(rows)
        usage = usage_stats(index, self.codebook_size)
        out.scalars.update(usage)
        out.scalars["quantisation_error"] = float(d2.mean())
        out.scalars["code_restarts"] = float(self.codebook.restarts)
        out.histograms["code_index"] = index.float()
        return out


def usage_stats(index: Tensor, size: int) -> dict[str, float]:
    """Perplexity and fraction used of a codebook of `size` codes, from chosen indices (any shape)."""
    counts = torch.bincount(index.flatten(), minlength=size).float()
    p = counts / counts.sum().clamp_min(1)
    return {"codebook_perplexity": float(torch.exp(-torch.special.xlogy(p, p).sum())),
            "codes_used": float((counts > 0).float().mean())}

