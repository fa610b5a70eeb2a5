"""Discrete codes by Gumbel-softmax: cat_vae (categorical variables only, as PyTorch-VAE's CategoricalVAE) and
joint_vae (Dupont 2018, JointVAE: continuous Gaussian dimensions plus categorical variables, each KL pulled
towards a capacity that rises during training).

The flat code (what `encode` returns and `decode` takes; latent_dim numbers): the continuous dimensions' posterior
means first (joint_vae), then for each categorical variable the one-hot of its most probable category (the
posterior's mode, as JointVAE decodes at evaluation; its probabilities are `categorical_probs`). Training decodes
Gumbel-softmax draws (aelab/models/gumbel.py) at the temperature tau = max(min_temperature, temperature *
exp(-anneal_rate * step)); `hard` decodes their one-hot with the relaxed gradient (straight-through). The prior is
N(0, I) times a uniform category per variable; `sample` draws from it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Autoencoder, Diagnostics
from aelab.models.gumbel import (categorical_kl_uniform, gumbel_softmax, one_hot_argmax, temperature,
                                 uniform_one_hot, usage)
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import gaussian_kl, reparameterize
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.schema import Annotated, OneOf, Range


class GumbelCode(Autoencoder):
    """`continuous` Gaussian dimensions and categorical variables of the given `sizes`, one encoder for both."""

    has_prior = True
    directions: ClassVar[dict[str, str | None]] = {"temperature": None, "category_perplexity": "max",
                                                   "confidence": None, "kl_categorical": None}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: int, continuous: int, sizes: list[int],
                 temperature: float, min_temperature: float, anneal_rate: float, hard: bool, likelihood: str,
                 input_noise: float, num_classes: int | None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.continuous, self.sizes = int(continuous), [int(k) for k in sizes]
        self.tau0, self.tau_min, self.anneal_rate, self.hard = (float(temperature), float(min_temperature),
                                                                float(anneal_rate), bool(hard))
        self.encoder = build_encoder(arch, self.input_shape, 2 * self.continuous + sum(self.sizes), 0,
                                     family=type(self).__name__)  # -> [mu, logvar, logits of each variable]
        self.decoder = arch.decoder(self.latent_dim, self.input_shape)
        self.register_buffer("last_step", torch.zeros((), dtype=torch.long))  # the schedule's step, for diagnostics

    def temperature(self, step: int) -> float:
        return temperature(step, self.tau0, self.anneal_rate, self.tau_min)

    def posterior_parts(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:  # (B, C), (B, C), [(B, K_i)]
        out = self.encoder(x)
        c = self.continuous
        return out[:, :c], out[:, c : 2 * c], list(out[:, 2 * c :].split(self.sizes, dim=1))

    def categorical_probs(self, x: Tensor) -> list[Tensor]:  # [(B, K_i)]: q(c_i | x)
        return [logits.float().softmax(1) for logits in self.posterior_parts(x)[2]]

    # ---- the interface --------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, latent_dim): [means | one-hots]
        mu, _, logits = self.posterior_parts(x)
        return torch.cat([mu, *(one_hot_argmax(l) for l in logits)], dim=1)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        z = torch.cat([torch.randn(n, self.continuous, device=self.device),
                       uniform_one_hot(n, self.sizes, self.device)], dim=1)
        return self.likelihood.mean(self.decode(z))

    def relaxed_code(self, mu: Tensor, logvar: Tensor, logits: list[Tensor], tau: float) -> Tensor:  # (B, latent_dim)
        return torch.cat([reparameterize(mu, logvar), *(gumbel_softmax(l, tau, self.hard) for l in logits)], dim=1)

    def code_kls(self, batch: Batch, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The reconstruction NLL of a relaxed draw at the step's temperature, and the batch-mean KLs (nats) of the
        continuous dimensions (C,) and of the categorical variables (V,)."""
        if self.training:
            self.last_step.fill_(step)
        mu, logvar, logits = self.posterior_parts(self.corrupt(batch.x))
        z = self.relaxed_code(mu, logvar, logits, self.temperature(step))
        recon = self.likelihood.batch_nll(self.decode(z), batch.x)
        kl_c = (torch.stack([categorical_kl_uniform(l) for l in logits], dim=1).mean(0) if logits
                else mu.new_zeros(0, dtype=torch.float32))  # (V,)
        return recon, gaussian_kl(mu.float(), logvar.float()).mean(0), kl_c

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """The temperature at the latest training step; per categorical variable, how evenly its most probable
        category spreads over the examples (perplexity: K = all used alike, 1 = one category for all, averaged
        over the variables), the mean top probability (confidence: 1 = one-hot posteriors) and the KL to the
        uniform prior, summed over the variables."""
        out = super().diagnostics(batch)
        out.scalars["temperature"] = self.temperature(int(self.last_step))
        mu, logvar, logits = self.posterior_parts(batch.x)
        if logits:
            out.scalars["category_perplexity"] = float(torch.stack(
                [usage(l.argmax(1), k) for l, k in zip(logits, self.sizes)]).mean())
            out.scalars["confidence"] = float(torch.stack([l.float().softmax(1).amax(1).mean() for l in logits]).mean())
            out.scalars["kl_categorical"] = float(sum(categorical_kl_uniform(l).mean() for l in logits))
            out.histograms["category"] = logits[0].argmax(1).float()
        return out


class CatVAE(GumbelCode):
    """`categorical_dims` categorical variables of `categories` classes, latent_dim = categorical_dims x categories
    (either may be null and is then derived from latent_dim; both null: one variable of latent_dim classes); the loss
    is the reconstruction of a Gumbel-softmax draw plus the KL of each variable to the uniform prior (closed form),
    summed."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 categories: Annotated[int | None, Range(2, None)] = None,
                 categorical_dims: Annotated[int | None, Range(1, None)] = None,
                 temperature: Annotated[float, Range(0, None, low_open=True)] = 1.0,
                 min_temperature: Annotated[float, Range(0, None, low_open=True)] = 0.5,
                 anneal_rate: Annotated[float, Range(0, None)] = 3e-5,
                 hard: bool = False,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        variables, categories = _variables(int(latent_dim), categories, categorical_dims)
        super().__init__(arch, input_shape, latent_dim, 0, [categories] * variables, temperature,
                         min_temperature, anneal_rate, hard, likelihood, input_noise, num_classes)
        self.categories, self.categorical_dims = categories, variables

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        recon, _, kl_c = self.code_kls(batch, step)
        return {"recon": recon, "kl": kl_c.sum()}

    def prior_quantile(self, p: Tensor) -> Tensor:
        """A code coordinate is a category's indicator: decoded latent grids span it from 0 to 1."""
        return p


def _variables(latent_dim: int, categories: int | None, categorical_dims: int | None) -> tuple[int, int]:
    """(categorical_dims, categories) from latent_dim: a null one is latent_dim / the other; both null, one variable of
    latent_dim categories; both set, they must agree with latent_dim."""
    if categories is None and categorical_dims is None:
        categories, categorical_dims = latent_dim, 1
    elif categories is None or categorical_dims is None:
        given, key = (categories, "categories") if categories is not None else (categorical_dims, "categorical_dims")
        if latent_dim % given:
            raise UserError("latent_dim", f"cat_vae's code is model.categorical_dims one-hots of model.categories "
                            f"classes: latent_dim={latent_dim} is not a multiple of model.{key}={given}",
                            f"latent_dim = a multiple of {given}, e.g. {given * max(2, latent_dim // given)}")
        categories, categorical_dims = (given, latent_dim // given) if key == "categories" else (latent_dim // given, given)
    elif categorical_dims * categories != latent_dim:
        raise UserError("latent_dim", f"model.categorical_dims={categorical_dims} one-hots of model.categories="
                        f"{categories} are a code of {categorical_dims * categories} numbers, not {latent_dim}",
                        f"latent_dim={categorical_dims * categories}, or one of the two null to derive it")
    if categories < 2:
        raise UserError("model.categories", f"a categorical variable needs at least 2 classes, latent_dim={latent_dim} "
                        f"leaves {categories}", "latent_dim >= 2 (categorical_dims x categories)")
    return int(categorical_dims), int(categories)


CAPACITY_PENALTIES = ("two_sided", "excess")


class JointVAE(GumbelCode):
    """JointVAE (Dupont 2018): latent_dim - sum(discrete) continuous dimensions and one categorical variable per
    entry of `discrete` (its number of categories). The loss is the reconstruction plus gamma * |KL_z - C_z| and
    gamma * |KL_c - C_c|, KL_z summed over the continuous dimensions and KL_c over the categorical variables
    (batch means, as the paper's code), the capacities C rising linearly from 0 to continuous_capacity and
    discrete_capacity over capacity_steps and discrete_capacity_steps (null: capacity_steps); C_c is capped at
    sum(log K_i), the most a uniform-prior KL can be (ramp first, then cap, as Dupont's code).

    capacity_penalty="excess" charges gamma * max(0, KL - C) instead: a KL below its capacity costs nothing, so
    nothing pushes it up to the capacity. The paper's two-sided form pushes a KL below C upwards with the full
    weight gamma, and on dSprites at CPU length that push is met by shifting every image's code alike (constant
    offsets that carry no information; scripts/joint_vae_shape.py). With the discrete capacity at its cap
    sum(log K_i), the excess form leaves the categorical variables free, and what they carry is what the
    reconstruction asks of them."""

    directions = {"capacity_continuous": None, "capacity_discrete": None, "kl_continuous_nats": None,
                  "kl_discrete_nats": None}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 discrete: list[int] = (2,),  # type: ignore[assignment]
                 gamma: Annotated[float, Range(0, None)] = 30.0,
                 continuous_capacity: Annotated[float, Range(0, None)] = 5.0,
                 discrete_capacity: Annotated[float, Range(0, None)] = 5.0,
                 capacity_steps: Annotated[int, Range(0, None)] = 25000,
                 discrete_capacity_steps: Annotated[int | None, Range(0, None)] = None,
                 capacity_penalty: Annotated[str, OneOf(CAPACITY_PENALTIES)] = "two_sided",
                 temperature: Annotated[float, Range(0, None, low_open=True)] = 0.67,
                 min_temperature: Annotated[float, Range(0, None, low_open=True)] = 0.67,
                 anneal_rate: Annotated[float, Range(0, None)] = 0.0,
                 hard: bool = False,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        sizes = [int(k) for k in discrete]
        if any(k < 2 for k in sizes):
            raise UserError("model.discrete", f"each categorical variable needs at least 2 categories, not {sizes}",
                            "a list of integers >= 2, e.g. [10] (or [] for continuous dimensions only)")
        continuous = int(latent_dim) - sum(sizes)
        if continuous < 0:
            raise UserError("latent_dim", f"joint_vae's code is its continuous dims + the one-hots of model.discrete="
                            f"{sizes} ({sum(sizes)} numbers): latent_dim={latent_dim} is too small",
                            f"latent_dim >= {sum(sizes)}, e.g. {sum(sizes) + 6} for 6 continuous dims")
        super().__init__(arch, input_shape, latent_dim, continuous, sizes, temperature, min_temperature,
                         anneal_rate, hard, likelihood, input_noise, num_classes)
        self.gamma, self.capacity_steps = float(gamma), int(capacity_steps)
        # Dupont's code ramps each part over its own number of iterations; null: the same as the continuous one
        self.discrete_capacity_steps = self.capacity_steps if discrete_capacity_steps is None else int(discrete_capacity_steps)
        self.continuous_capacity = float(continuous_capacity)
        self.capacity_penalty = capacity_penalty  # checked against CAPACITY_PENALTIES by the schema (one line)
        # As Dupont's code: C_c ramps towards discrete_capacity and is then capped at sum(log K_i), the most a
        # uniform-prior KL can be, so a discrete_capacity above it reaches the cap before discrete_capacity_steps
        self.discrete_capacity, self.discrete_capacity_cap = float(discrete_capacity), sum(math.log(k) for k in sizes)

    @property
    def monitor(self) -> str:
        """The loss holds KLs to capacities that rise with the step: the negative ELBO compares epochs fairly."""
        return "elbo_loss"

    def capacities(self, step: int) -> tuple[float, float]:
        """(C_z, C_c) at a training step: linear from 0 to their maxima over capacity_steps and
        discrete_capacity_steps."""
        return (_ramp(step, self.capacity_steps) * self.continuous_capacity,
                min(_ramp(step, self.discrete_capacity_steps) * self.discrete_capacity, self.discrete_capacity_cap))

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        recon, kl_z, kl_c = self.code_kls(batch, step)
        c_z, c_c = self.capacities(step)
        terms = {"recon": recon}
        if self.continuous:
            terms["kl_continuous"] = self._penalty(kl_z.sum(), c_z)
        if self.sizes:
            terms["kl_discrete"] = self._penalty(kl_c.sum(), c_c)
        return terms

    def _penalty(self, kl: Tensor, capacity: float) -> Tensor:
        gap = kl - capacity
        return self.gamma * (gap.abs() if self.capacity_penalty == "two_sided" else gap.clamp(min=0))

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds each continuous dimension's KL, both KLs in nats against their capacities now, and the negative
        ELBO (reconstruction + both KLs: what the checkpoint monitor compares)."""
        out = super().diagnostics(batch)
        step = int(self.last_step)
        recon, kl_z, kl_c = self.code_kls(batch, step)
        out.scalars.update({f"kl_dim/{d:02d}": float(v) for d, v in enumerate(kl_z)})
        c_z, c_c = self.capacities(step)
        out.scalars.update({"kl_continuous_nats": float(kl_z.sum()), "kl_discrete_nats": float(kl_c.sum()),
                            "capacity_continuous": c_z, "capacity_discrete": c_c,
                            "elbo_loss": float(recon) + float(kl_z.sum()) + float(kl_c.sum())})
        return out


def _ramp(step: int, steps: int) -> float:  # 0 -> 1 linearly over `steps` (0: 1 at once)
    return 1.0 if steps <= 0 else min(1.0, max(step, 0) / steps)
