"""FSQ, finite scalar quantization (Mentzer et al. 2023): VQ-VAE's code grid with the codebook replaced by a fixed
lattice. Each cell's vector has one channel per entry of `levels`; channel i is bounded to L_i values by
half_l * tanh(z + shift) - offset (half_l = (L_i - 1)(1 - eps) / 2; for an even L_i the offset 0.5 and its shift
atanh(offset / half_l) make the L_i integers -L_i/2 .. L_i/2 - 1 reachable, as the paper's code does), rounded with a
straight-through gradient and divided by L_i // 2, so codes lie in [-1, 1]. prod(levels) codes ([8, 5, 5, 5]:
1,000), no codebook to learn, no commitment or codebook loss: the loss is the reconstruction alone.

The grid handling is VQ-VAE's (aelab/models/vq_vae.py: the conv feature map or a row of vectors on other archs,
flatten / unflatten, code_indices, codes_from_indices, usage diagnostics): `codebook` here is the lattice, with
`vectors` (K, len(levels)) listing every code in index order (mixed radix: index = sum_i digit_i * prod_{j<i} L_j)
and `nearest` bounding and rounding, so the PixelCNN prior over code indices (`aelab fit-prior prior=pixelcnn`)
works unchanged. latent_dim = grid cells x len(levels).

Initial scale: the arch's encoders start with outputs of std ~0.05 (mlp, burgess_conv), so every row would round to
the lattice's centre cell: one code, and no gradient for the decoder's first weights (its input is all zeros). On the
first training batch the encoder's last linear / conv layer is rescaled once so its outputs have std 1, spread over
the levels (a data-dependent initialisation, as VQ-VAE seeds its codebook from the first batch); it is recorded in
the checkpoint, so a resumed run does not repeat it.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Autoencoder, NoPriorError
from aelab.models.vq_vae import LIKELIHOOD_NAMES, VQVAE, _distributed
from aelab.nets import Arch
from aelab.nets.conv import ConvArch, code_grid, grid_nets
from aelab.schema import OneOf, Range

EPS = 1e-3  # keeps the bound just inside the outermost levels' rounding edges (the paper's code)


class Lattice(nn.Module):
    """The implicit codebook of FSQ: per channel L_i levels; bound, round, and index <-> code conversions."""

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.size = int(math.prod(levels))
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("half_width", (lv // 2), persistent=False)  # rounded values / this lie in [-1, 1]
        basis = torch.cumprod(torch.tensor([1] + list(levels[:-1])), 0)
        self.register_buffer("basis", basis, persistent=False)  # (d,) int64 mixed-radix place values
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long), persistent=False)  # none: no codebook
        self.register_buffer("vectors", self.codes(torch.arange(self.size)), persistent=False)  # (K, d)

    def bound(self, z: Tensor) -> Tensor:  # (N, d) -> (N, d) in (-L/2, L/2) (odd L) / (-L/2, L/2 - 1) (even L)
        half_l = (self.levels - 1) * (1 - EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z.float() + shift) * half_l - offset

    def quantise(self, z: Tensor) -> Tensor:  # (N, d) -> (N, d) codes in [-1, 1], straight-through gradient
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self.half_width

    def indices(self, codes: Tensor) -> Tensor:  # (N, d) codes -> (N,) int64
        digits = torch.round(codes.float() * self.half_width + self.half_width).long()  # 0 .. L_i - 1
        return (digits * self.basis).sum(-1)

    def codes(self, index: Tensor) -> Tensor:  # (N,) int64 -> (N, d) codes
        digits = (index.unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits.float() - self.half_width) / self.half_width

    @torch.no_grad()
    def nearest(self, rows: Tensor) -> tuple[Tensor, Tensor]:  # (N, d) -> indices (N,), squared errors (N,)
        """The lattice point each encoder row rounds to, and its squared distance from the bounded row (in code
        units), as Codebook.nearest answers for VQ-VAE."""
        bounded = self.bound(rows) / self.half_width
        codes = self.quantise(rows)
        return self.indices(codes), (bounded - codes).pow(2).sum(1)


class FSQ(VQVAE):
    """VQ-VAE's grid and diagnostics (codebook_perplexity, codes_used, quantisation_error) on a fixed lattice."""

    directions = {"code_restarts": None}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 levels: list[int] = (8, 5, 5, 5),  # type: ignore[assignment]
                 likelihood: Annotated[str, OneOf(LIKELIHOOD_NAMES)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None) -> None:
        # VQ-VAE's constructor builds a learnt codebook: the shared grid methods need only what is set here
        Autoencoder.__init__(self, arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise UserError("model.levels", f"each channel needs at least 2 levels, not {levels}",
                            "a list of integers >= 2, e.g. [8, 5, 5, 5] (1,000 codes) or [8, 8, 8] (512)")
        self.levels, self.embedding_dim = levels, len(levels)
        self.spatial = isinstance(arch, ConvArch)
        self.grid = self._fsq_layout(arch)
        self.codebook = Lattice(levels)
        self.codebook_size = self.codebook.size
        if self.spatial:
            self.encoder, self.decoder = grid_nets(arch, self.input_shape, self.embedding_dim)  # type: ignore[arg-type]
        else:
            self.encoder = arch.encoder(self.input_shape, self.latent_dim)
            self.decoder = arch.decoder(self.latent_dim, self.input_shape)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def _fsq_layout(self, arch: Arch) -> tuple[int, int]:
        """(h, w) of the code grid: conv's feature map, else a row of latent_dim / len(levels) vectors."""
        d = self.embedding_dim
        if self.spatial:
            h, w = code_grid(self.input_shape, arch.channels)  # type: ignore[attr-defined]
            if h * w * d != self.latent_dim:
                raise UserError("latent_dim", f"fsq's code is the conv encoder's {h}x{w} grid of vectors of "
                                f"len(model.levels)={d}: {h * w * d} numbers, not {self.latent_dim}",
                                f"latent_dim={h * w * d}")
            return h, w
        if self.latent_dim % d:
            raise UserError("latent_dim", f"fsq's code is a row of vectors of len(model.levels)={d}: "
                            f"{self.latent_dim} is not a multiple of {d}", f"latent_dim = a multiple of {d}")
        return 1, self.latent_dim // d

    @torch.no_grad()
    def _initialise_scale(self, z_e: Tensor) -> None:
        """Scale the encoder's last linear / conv layer so that outputs like z_e (this batch's) have std 1."""
        self.initialised.fill_(True)
        last = [m for m in self.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        std = z_e.detach().float().std().reshape(1)
        if _distributed():  # every rank scales alike
            dist.all_reduce(std)
            std /= dist.get_world_size()
        if last and float(std) > 0:
            last[-1].weight.mul_(1.0 / std.to(last[-1].weight.dtype))
            if last[-1].bias is not None:
                last[-1].bias.mul_(1.0 / std.to(last[-1].bias.dtype))

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z_e = self.flatten(self.encoder_grid(self.corrupt(batch.x)))  # (B, h * w * d)
        if self.training and not bool(self.initialised):
            self._initialise_scale(z_e)
            z_e = self.flatten(self.encoder_grid(self.corrupt(batch.x)))
        quantised = self.codebook.quantise(z_e.view(-1, self.embedding_dim)).view_as(z_e).to(z_e.dtype)
        return {"recon": self.likelihood.batch_nll(self.decode(quantised), batch.x)}

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        raise NoPriorError("model", "fsq has no prior of its own: its prior over the code grid is fitted after "
                           "training (two-stage)", "aelab fit-prior run=<run> prior=pixelcnn, then aelab sample run=<run>")
