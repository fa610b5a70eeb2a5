"""FactorVAE (Kim & Mnih 2018): the VAE plus gamma times the total correlation of the codes, estimated by a
discriminator that tells codes z ~ q(z) from codes whose dimensions were permuted independently across the
batch (draws from prod_d q(z_d)).

With D(z) the discriminator's probability that z is a joint code, TC(z) ~= E_q(z)[log D(z) / (1 - D(z))],
the mean of its logit. Two optimiser phases: the VAE (encoder + decoder: recon + kl + gamma * tc) and the
discriminator (its cross-entropy, on detached codes). The paper uses a second batch for the permuted codes;
this permutes the same batch's codes, as disentanglement_lib does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Diagnostics, Phase
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, reparameterize
from aelab.nets import Arch
from aelab.nets.mlp import mlp
from aelab.schema import OneOf, Range


def permute_dims(z: Tensor) -> Tensor:  # (B, D) -> (B, D): each column shuffled on its own
    order = torch.argsort(torch.rand_like(z), dim=0)
    return z.gather(0, order)


class FactorVAE(VAE):
    """gamma: weight of the total-correlation estimate (the paper: 6.4 to 100, 40 on dSprites); disc_hidden: the
    discriminator's hidden sizes (the paper: six of 1000); disc_lr_scale: its learning rate over the VAE's."""
    directions = {"adv_disc": None, "disc_hit_rate": None, "tc_estimate": "min"}  # the discriminator is an opponent, not the model

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 gamma: Annotated[float, Range(0, None)] = 10.0,
                 disc_hidden: Annotated[Sequence[int], Range(1, None)] = (1000,) * 6,
                 disc_lr_scale: Annotated[float, Range(0, None, low_open=True)] = 1.0,
                 beta: Annotated[float, Range(0, None)] = 1.0,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes)
        self.gamma, self.disc_lr_scale = float(gamma), float(disc_lr_scale)
        self.discriminator = mlp([self.latent_dim, *[int(h) for h in disc_hidden], 1], "leaky_relu")

    def total_correlation(self, z: Tensor) -> Tensor:  # (B, D) -> scalar: the discriminator's TC estimate
        return self.discriminator(z).mean()

    def discriminator_loss(self, z: Tensor) -> Tensor:  # (B, D) codes of q(z) -> its cross-entropy
        joint, product = self.discriminator(z), self.discriminator(permute_dims(z))
        return (F.binary_cross_entropy_with_logits(joint, torch.ones_like(joint))
                + F.binary_cross_entropy_with_logits(product, torch.zeros_like(product)))

    def latent_terms(self, mu: Tensor, logvar: Tensor, z: Tensor, step: int) -> dict[str, Tensor]:
        return {**super().latent_terms(mu, logvar, z, step), "tc": self.gamma * self.total_correlation(z)}

    def vae_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return super().losses(batch, step)

    def discriminator_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        with torch.no_grad():
            mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
            z = reparameterize(mu, logvar)
        return {"adv_disc": self.discriminator_loss(z)}

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return {**self.vae_losses(batch, step), **self.discriminator_losses(batch, step)}

    @property
    def monitor(self) -> str:
        """The loss sums the VAE's terms and the discriminator's, players on opposite sides: the reconstruction
        says which epoch's model is better (as for the adversarial AE)."""
        return "recon"

    def phases(self) -> list[Phase]:
        vae = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        return [Phase("vae", vae, loss=self.vae_losses),
                Phase("discriminator", list(self.discriminator.parameters()), lr_scale=self.disc_lr_scale,
                      loss=self.discriminator_losses)]

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the unweighted TC estimate and how often the discriminator tells joint from permuted codes."""
        out = super().diagnostics(batch)
        mu, logvar = self.posterior(batch.x, batch.y)
        z = reparameterize(mu, logvar)
        out.scalars["tc_estimate"] = float(self.total_correlation(z))
        hits = torch.cat([self.discriminator(z) > 0, self.discriminator(permute_dims(z)) <= 0])
        out.scalars["disc_hit_rate"] = float(hits.float().mean())
        return out
