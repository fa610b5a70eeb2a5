"""Sparse autoencoder: a sparsity penalty on the code (L1 of the activations, or a Bernoulli KL to a target rate),
or sparsity by construction: the k-sparse / TopK autoencoder.

penalty=topk (Makhzani & Frey 2013; Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): the encoder's
outputs are pre-activations; the code keeps the k largest per example, zeroes the rest, then applies a ReLU
(z = ReLU(TopK(pre))), so at most k units fire (exactly k wherever the k-th largest pre-activation is positive).
A latent is dead when it fired on none of the last `dead_after` training examples (Gao et al.: 10M tokens; here
counted in examples, so the window does not depend on the batch size). AuxK (auxk > 0): the top-auxk dead
latents' pre-activations, added to the detached live code, reconstruct the input; its loss, weighted by
auxk_alpha (the paper: 1/32), trains the dead latents on the error the live ones leave. With a linear decoder and
the Gaussian likelihood this is the paper's ||e - W_dec z_aux||^2 (e = x - x_hat); with aelab's nonlinear decoders
and likelihoods it is the same loss as `recon`, on the same scale, so the paper's weight keeps its meaning.

standardize (topk, on by default): each unit's pre-activation is centred and scaled over the batch (a BatchNorm
without affine parameters; running statistics at eval) before TopK. Gao et al.'s encoder is one linear map of
centred inputs (b_pre); aelab's are deep nets (any arch) whose outputs share a large common part, so unstandardised
the same few units top every example: 77% of 512 never fired at initialisation on Fashion-MNIST, and training,
AuxK included, kept 80-86% dead. Standardised, each unit is ranked against its own spread and wins on its own top
examples: measured 0% dead after an epoch, with or without AuxK (scripts/topk_check.py). The code then holds
standardised values; the decoder learns their scale.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.ae import AE
from aelab.models.base import Diagnostics, Picture
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range

PENALTIES = ("l1", "kl", "topk")


def activation(z: Tensor) -> Tensor:  # (B, D) -> (B, D) in [0, 1)
    """How strongly each code unit fires: |a| -> 2 * sigmoid(|a|) - 1."""
    return 2 * torch.sigmoid(z.abs()) - 1


def bernoulli_kl(rho: float, rho_hat: Tensor) -> Tensor:  # (D,) KL(Bernoulli(rho) || Bernoulli(rho_hat))
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


def topk_code(pre: Tensor, k: int) -> Tensor:  # (B, D) pre-activations -> (B, D) with at most k nonzeros per row
    """ReLU(TopK(pre)): the k largest entries of each row kept (then rectified), the rest zero."""
    values, index = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, index, values.relu())


def dead_fraction(codes: Tensor) -> float:
    """The fraction of units (columns of codes (N, D)) that are zero on every one of the N examples."""
    return float((codes != 0).any(0).logical_not().float().mean())


class FiringWindow(nn.Module):
    """Per latent, the training examples seen since it last fired: dead once that reaches `dead_after`."""

    def __init__(self, size: int, dead_after: int) -> None:
        super().__init__()
        self.dead_after = int(dead_after)
        self.register_buffer("since_fired", torch.zeros(size, dtype=torch.long))  # examples; a checkpoint keeps it

    @torch.no_grad()
    def update(self, codes: Tensor) -> None:  # codes (B, D) of a training batch
        fired = (codes != 0).any(0)  # (D,)
        seen = torch.tensor(codes.shape[0], device=codes.device)
        if dist.is_available() and dist.is_initialized():  # every rank counts every rank's examples
            fired = fired.to(torch.uint8)
            dist.all_reduce(fired, op=dist.ReduceOp.MAX)
            dist.all_reduce(seen)
            fired = fired.bool()
        self.since_fired.add_(seen).masked_fill_(fired, 0)

    def dead(self) -> Tensor:  # (D,) bool
        return self.since_fired >= self.dead_after


class Standardizer(nn.Module):
    """Each unit's pre-activation centred and scaled over the batch (BatchNorm without affine parameters; running
    statistics at eval and for a batch of one)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(size, affine=False)

    def forward(self, pre: Tensor) -> Tensor:  # (B, D) -> (B, D)
        n = self.norm
        batch_stats = self.training and pre.shape[0] > 1
        return nn.functional.batch_norm(pre, n.running_mean, n.running_var, training=batch_stats,
                                        momentum=n.momentum if batch_stats else 0.0, eps=n.eps)


class SparseAE(AE):
    """penalty=l1: beta * summed activation per example; penalty=kl: beta * sum over units of KL(rho || mean
    activation); penalty=topk: the k largest pre-activations kept (no penalty; AuxK revives dead latents)."""
    directions = {"mean_activation": None, "active_fraction": None,  # targets, not scores
                  "dead_fraction": "min", "dead_fraction_train": "min"}  # dead latents waste code capacity

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        penalty, latent_dim, k, auxk = (options.get(n) for n in ("penalty", "latent_dim", "k", "auxk"))
        if penalty != "topk":
            return
        if isinstance(latent_dim, int) and isinstance(k, int) and k > latent_dim:
            raise UserError(f"{key}.k", f"keeps the k largest of latent_dim={latent_dim} units: {k} is more",
                            f"1 <= {key}.k <= latent_dim")
        if isinstance(latent_dim, int) and isinstance(auxk, int) and auxk > latent_dim:
            raise UserError(f"{key}.auxk", f"takes the top auxk dead latents of latent_dim={latent_dim}: {auxk} is "
                            "more", f"0 <= {key}.auxk <= latent_dim (0: no AuxK)")
        if options.get("beta") not in (None, 1.0):  # the top-level default; anything else was asked for
            raise UserError("beta", f"{key}.penalty=topk has no penalty to weigh: k sets the sparsity "
                            f"(beta={options.get('beta')} would change nothing)", f"leave beta out, or {key}.penalty=l1|kl")

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 1.0, penalty: Annotated[str, OneOf(PENALTIES)] = "l1",
                 rho: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.05,
                 k: Annotated[int | None, Range(1, None)] = None, auxk: Annotated[int, Range(0, None)] = 0,
                 auxk_alpha: Annotated[float, Range(0, None)] = 1 / 32,
                 dead_after: Annotated[int, Range(1, None)] = 10000, standardize: bool = True,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None, weight_decay: Annotated[float, Range(0, None)] = 0.0) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, weight_decay)
        if penalty not in PENALTIES:
            raise UserError("model.penalty", f"unknown value {penalty!r}", "one of: " + ", ".join(PENALTIES))
        k = max(1, self.latent_dim // 4) if k is None else int(k)  # null: a quarter of the code
        if penalty == "topk" and not 1 <= k <= self.latent_dim:
            raise UserError("model.k", f"keeps the k largest of latent_dim={self.latent_dim} units: {k} is out of "
                            "range", "1 <= model.k <= latent_dim")
        self.beta, self.penalty, self.rho = float(beta), penalty, float(rho)
        self.k, self.auxk, self.auxk_alpha = int(k), min(int(auxk), self.latent_dim), float(auxk_alpha)
        self.firing = FiringWindow(self.latent_dim, dead_after) if penalty == "topk" else None
        # topk: each unit's pre-activation standardised over the batch (running statistics at eval) before TopK
        self.standardizer = Standardizer(self.latent_dim) if penalty == "topk" and standardize else None

    @property
    def topk(self) -> bool:
        return self.penalty == "topk"

    def pre_activations(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, D): what topk ranks
        pre = super().encode(x, y)
        return pre if self.standardizer is None else self.standardizer(pre)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return topk_code(self.pre_activations(x, y), self.k) if self.topk else super().encode(x, y)

    def code_penalties(self, z: Tensor) -> dict[str, Tensor]:
        if self.topk:
            return {}  # sparse by construction
        a = activation(z)  # (B, D)
        if self.penalty == "l1":
            return {"sparsity": self.beta * a.sum(1).mean()}
        return {"sparsity": self.beta * bernoulli_kl(self.rho, a.mean(0)).sum()}  # per unit, over the batch

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if not self.topk:
            return super().losses(batch, step)
        pre = self.pre_activations(self.corrupt(batch.x), batch.y)  # (B, D)
        z = topk_code(pre, self.k)
        terms = {"recon": self.likelihood.batch_nll(self.decode(z, batch.y), batch.x)}
        if self.training:
            self.firing.update(z)  # type: ignore[union-attr]
        if self.auxk > 0 and self.auxk_alpha > 0:
            terms["auxk"] = self.auxk_alpha * self.auxk_loss(pre, z, batch)
        if self.weight_decay > 0:
            terms["weight_decay"] = self.weight_decay * self.squared_weights()
        return terms

    def auxk_loss(self, pre: Tensor, z: Tensor, batch: Batch) -> Tensor:
        """The reconstruction from the live code (detached) plus the top-auxk dead latents: the gradient reaches
        only the dead latents' pre-activations (and the decoder), so they learn the error the live ones leave."""
        dead = self.firing.dead()  # type: ignore[union-attr]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return pre.sum() * 0.0  # keeps the graph (DDP, autocast) with nothing to revive
        masked = pre.masked_fill(~dead, float("-inf"))  # only dead latents compete
        z_aux = topk_code(masked, min(self.auxk, n_dead))
        return self.likelihood.batch_nll(self.decode(z.detach() + z_aux, batch.y), batch.x)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds activation histograms and, with labels, the mean activation of each unit per class as an image;
        topk: the dead-latent fractions (on these examples, and over the training window)."""
        out = super().diagnostics(batch)
        z = self.encode(batch.x, batch.y)
        a = (z if self.topk else activation(z)).float()  # (B, D): topk codes are activations already
        out.histograms["activations"] = a.flatten()
        out.histograms["unit_mean_activation"] = a.mean(0)
        out.scalars["mean_activation"] = float(a.mean())
        if self.topk:
            out.scalars["active_fraction"] = float((a != 0).float().mean())  # at most k / latent_dim
            out.scalars["dead_fraction"] = dead_fraction(a)  # fired on none of these examples
            out.scalars["dead_fraction_train"] = float(self.firing.dead().float().mean())  # type: ignore[union-attr]
        else:
            out.scalars["active_fraction"] = float((a > 0.1).float().mean())  # entries firing above 0.1
        if batch.y is not None:
            out.images["mean_activation_per_class"] = per_class_image(a, batch.y, self.num_classes or int(batch.y.max()) + 1)
        return out


def per_class_image(a: Tensor, y: Tensor, num_classes: int) -> Picture:
    """Mean activation (B, D) per class: one sqrt(D) x sqrt(D) tile per class when D is square, else one row per class."""
    d = a.shape[1]
    means = torch.stack([a[y == c].mean(0) if (y == c).any() else a.new_zeros(d) for c in range(num_classes)])  # (K, D)
    means = means / means.amax().clamp_min(1e-8)  # brightest unit white
    side = math.isqrt(d)
    if side * side == d:
        tiles, (sy, sx), nrow = means.view(num_classes, 1, side, side), (max(1, 48 // side),) * 2, min(num_classes, 10)
    else:
        tiles, (sy, sx), nrow = means.view(1, 1, num_classes, d), (8, max(1, 256 // d)), 1
    return Picture(tiles.repeat_interleave(sy, dim=-2).repeat_interleave(sx, dim=-1), per_row=nrow)
