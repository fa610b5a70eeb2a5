"""beta-VAE: a VAE with its own default beta, an optional KL warm-up schedule and free bits (hooks, not a copy)."""

from __future__ import annotations

import torch
from torch import Tensor

from aelab.errors import UserError
from aelab.data.base import Batch
from aelab.models.base import Diagnostics
from aelab.models.vae import VAE, gaussian_kl, reparameterize
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range

SCHEDULES = ("linear", "cyclical")


class BetaVAE(VAE):
    """kl_warmup_steps > 0 ramps the KL weight from 0 to beta over that many steps (linear), or repeats
    ramp-then-hold cycles of 2 * kl_warmup_steps (cyclical annealing, Fu et al. 2019). free_bits is a floor
    on each dimension's batch-mean KL (nats): below it a dimension costs nothing more, so it is not shut off."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 4.0, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 kl_warmup_steps: Annotated[int, Range(0, None)] = 0,
                 kl_schedule: Annotated[str, OneOf(SCHEDULES)] = "linear",
                 free_bits: Annotated[float, Range(0, None)] = 0.0) -> None:
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes)
        if kl_schedule not in SCHEDULES:
            raise UserError("model.kl_schedule", f"unknown value {kl_schedule!r}", "one of: " + ", ".join(SCHEDULES))
        self.kl_warmup_steps, self.kl_schedule, self.free_bits = int(kl_warmup_steps), kl_schedule, float(free_bits)

    @property
    def monitor(self) -> str:
        """Under a KL schedule or free bits the logged loss weighs the KL as training does at that step: an
        early, under-weighted epoch would look best. The loss at the final beta compares epochs fairly."""
        return "loss_at_beta" if self.kl_warmup_steps > 0 or self.free_bits > 0 else "loss"

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        out = super().diagnostics(batch)
        mu, logvar = self.posterior(batch.x, batch.y)
        z = reparameterize(mu, logvar)
        recon = self.recon_weight * self.likelihood.batch_nll(self.decode(z, batch.y), batch.x)
        out.scalars["loss_at_beta"] = float(recon) + self.beta * float(gaussian_kl(mu, logvar).float().mean(0).sum())
        return out

    def kl_weight(self, step: int) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        if self.kl_schedule == "cyclical":
            step = step % (2 * self.kl_warmup_steps)
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def kl_penalty(self, kl_per_dim: Tensor) -> Tensor:
        return kl_per_dim.clamp_min(self.free_bits).sum() if self.free_bits > 0 else kl_per_dim.sum()
