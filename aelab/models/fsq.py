"""FSQ, finite scalar quantization (Mentzer et al. 2023): VQ-VAE's code grid with the learnt codebook replaced by a
fixed lattice. A lattice vector has one channel per entry of `levels`; channel i is bounded to L_i values by
half_l * tanh(z + shift) - offset (half_l = (L_i - 1)(1 + eps) / 2; for an even L_i the offset 0.5 and its shift
atanh(offset / half_l) make the integers -L_i/2 .. L_i/2 - 1 reachable; the paper's code has (1 - eps), which makes
offset / half_l > 1 for L_i = 2, so its shift is NaN: 1 + eps, as vector-quantize-pytorch has it), rounded with a
straight-through gradient and divided by L_i // 2, so lattice codes lie in [-1, 1]. prod(levels) codes ([8, 5, 5, 5]:
1,000); nothing to learn in the quantiser, no commitment or codebook loss: the loss is the reconstruction alone.

The grid is VQ-VAE's (aelab/models/vq_vae.py): the conv feature map, or a row of vectors on other archs, each of
embedding_dim = latent_dim / cells numbers (model.embedding_dim=null derives it; set, it must agree), and so are
flatten / unflatten, code_indices and the usage diagnostics (codebook_perplexity, codes_used, quantisation_error).
Where embedding_dim differs from len(levels), a linear map takes each cell's vector to the lattice and another
takes the lattice code back (the reference implementations' project_in / project_out); where they are equal
(e.g. a 7x7 grid with latent_dim=196 and 4 levels) there is none, as in the paper. `codebook.vectors` (K,
embedding_dim) lists every code in index order (mixed radix: index = sum_i digit_i * prod_{j<i} L_j), so the
PixelCNN prior over code indices (`aelab fit-prior prior=pixelcnn`) fits and samples FSQ runs as it does vq_vae's.

Initial scale: the arch's encoders start with outputs of std ~0.05 (mlp, burgess_conv), which would all round to the
lattice's centre: one code, and no gradient for the decoder's first weights (their input is all zeros). On the
first training batch the encoder's last linear / conv layer is rescaled once so that what is bounded has std 1,
spread over the levels (a data-dependent initialisation, as VQ-VAE seeds its codebook from the first batch); it is
recorded in the checkpoint, so a resumed run does not repeat it.
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
from aelab.nets.conv import ConvArch, grid_nets
from aelab.schema import OneOf, Range

EPS = 1e-3  # the outermost levels are reached well inside the bound, and atanh(offset / half_l) stays finite


class Lattice(nn.Module):
    """FSQ's implicit codebook: L_i levels per channel; bound, round, and index <-> lattice code conversions."""

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.size = int(math.prod(levels))
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("half_width", lv // 2, persistent=False)  # rounded values / this lie in [-1, 1]
        place = torch.cumprod(torch.tensor([1] + list(levels[:-1])), 0)
        self.register_buffer("place", place, persistent=False)  # (d,) int64 mixed-radix place values

    def bound(self, z: Tensor) -> Tensor:  # (N, d) -> (N, d): (-L/2, L/2) for odd L, (-L/2, L/2 - 1) for even L
        half_l = (self.levels - 1) * (1 + EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z.float() + shift) * half_l - offset

    def quantise(self, z: Tensor) -> Tensor:  # (N, d) -> (N, d) lattice codes in [-1, 1], straight-through gradient
        bounded = self.bound(z)
        return (bounded + (torch.round(bounded) - bounded).detach()) / self.half_width

    def indices(self, codes: Tensor) -> Tensor:  # (N, d) lattice codes -> (N,) int64
        digits = torch.round(codes.float() * self.half_width + self.half_width).long()  # 0 .. L_i - 1
        return (digits * self.place).sum(-1)

    def codes(self, index: Tensor) -> Tensor:  # (N,) int64 -> (N, d) lattice codes
        digits = (index.unsqueeze(-1) // self.place) % self.levels.long()
        return (digits.float() - self.half_width) / self.half_width


class FSQCodebook(nn.Module):
    """The lattice seen from the code grid's vectors (embedding_dim): what VQ-VAE's Codebook answers, for FSQ."""

    def __init__(self, levels: list[int], dim: int) -> None:
        super().__init__()
        self.lattice, self.dim, self.size = Lattice(levels), int(dim), int(math.prod(levels))
        project = dim != len(levels)
        self.project_in = nn.Linear(dim, len(levels)) if project else nn.Identity()
        self.project_out = nn.Linear(len(levels), dim) if project else nn.Identity()
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long), persistent=False)  # nothing to restart

    def pre_bound(self, rows: Tensor) -> Tensor:  # (N, D) -> (N, d): what the lattice bounds
        return self.project_in(rows)

    def forward(self, rows: Tensor) -> Tensor:  # (N, D) -> (N, D): quantised, straight-through
        return self.project_out(self.lattice.quantise(self.pre_bound(rows)))

    @property
    def vectors(self) -> Tensor:  # (K, D): every code, in index order
        return self.from_indices(torch.arange(self.size, device=self.lattice.levels.device))

    def from_indices(self, index: Tensor) -> Tensor:  # (...) int64 -> (..., D)
        return self.project_out(self.lattice.codes(index.flatten())).view(*index.shape, self.dim)

    @torch.no_grad()
    def nearest(self, rows: Tensor) -> tuple[Tensor, Tensor]:  # (N, D) -> indices (N,), squared errors (N,)
        """The lattice point each row rounds to, and its squared distance from the bounded row (lattice units)."""
        lattice = self.lattice
        with torch.autocast(rows.device.type, enabled=False):  # fp32: a bf16 projection would flip roundings
            pre = self.pre_bound(rows.float())
        bounded = lattice.bound(pre) / lattice.half_width
        codes = lattice.quantise(pre)
        return lattice.indices(codes), (bounded - codes).pow(2).sum(1)


class FSQ(VQVAE):
    """VQ-VAE's grid and diagnostics on a fixed lattice; embedding_dim as vq_vae's (null: latent_dim / cells)."""

    directions = {"code_restarts": None}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 levels: list[int] = (8, 5, 5, 5),  # type: ignore[assignment]
                 embedding_dim: Annotated[int | None, Range(1, None)] = None,
                 likelihood: Annotated[str, OneOf(LIKELIHOOD_NAMES)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None) -> None:
        # VQ-VAE's constructor builds a learnt codebook: of it, FSQ shares the layout and the grid methods
        Autoencoder.__init__(self, arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise UserError("model.levels", f"each channel needs at least 2 levels, not {levels}",
                            "a list of integers >= 2, e.g. [8, 5, 5, 5] (1,000 codes) or [8, 8, 8] (512)")
        self.levels = levels
        self.spatial = isinstance(arch, ConvArch)
        self.grid, self.embedding_dim = self._layout(arch, embedding_dim)
        self.codebook = FSQCodebook(levels, self.embedding_dim)
        self.codebook_size = self.codebook.size
        if self.spatial:
            self.encoder, self.decoder = grid_nets(arch, self.input_shape, self.embedding_dim)  # type: ignore[arg-type]
        else:
            self.encoder = arch.encoder(self.input_shape, self.latent_dim)
            self.decoder = arch.decoder(self.latent_dim, self.input_shape)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def codes_from_indices(self, index: Tensor) -> Tensor:  # (B, h, w) int64 -> (B, latent_dim) flat codes
        return self.codebook.from_indices(index).reshape(index.shape[0], -1)

    @torch.no_grad()
    def _initialise_scale(self, z_e: Tensor) -> None:
        """Scale the encoder's last linear / conv layer so that the lattice's inputs for z_e (this batch) have std 1."""
        self.initialised.fill_(True)
        last = [m for m in self.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        std = self.codebook.pre_bound(z_e.view(-1, self.embedding_dim)).float().std().reshape(1)
        if _distributed():  # every rank scales alike
            dist.all_reduce(std)
            std /= dist.get_world_size()
        if last and float(std) > 0:
            for p in (last[-1].weight, last[-1].bias):
                if p is not None:
                    p.mul_(1.0 / std.to(p.dtype))

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        x = self.corrupt(batch.x)
        z_e = self.flatten(self.encoder_grid(x))  # (B, h * w * D)
        if self.training and not bool(self.initialised):
            self._initialise_scale(z_e)
            z_e = self.flatten(self.encoder_grid(x))
        quantised = self.codebook(z_e.view(-1, self.embedding_dim)).view_as(z_e).to(z_e.dtype)
        return {"recon": self.likelihood.batch_nll(self.decode(quantised), batch.x)}

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        raise NoPriorError("model", "fsq has no prior of its own: its prior over the code grid is fitted after "
                           "training (two-stage)", "aelab fit-prior run=<run> prior=pixelcnn, then aelab sample run=<run>")
