"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric").

A VAE whose reconstruction error is measured in the features of a GAN discriminator instead of pixels. The
discriminator is the arch's encoder network (its output, `disc_features` wide, is Dis_l: the layer whose
features the reconstruction is compared in), then a LeakyReLU and one linear unit that says real or fake, so it
works on every arch (mlp, conv, burgess_conv, yours).

  L_prior  = KL(q(z|x) || N(0, I))
  L_llike  = -log N(Dis_l(x) | Dis_l(x~), I) = 0.5 * ||Dis_l(x) - Dis_l(x~)||^2 (+ a constant), x~ = Dec(z), z ~ q(z|x)
  L_GAN    = the discriminator's cross-entropy on x (real), x~ and x_p = Dec(z_p), z_p ~ N(0, I) (fakes)

Three optimiser phases per step, each over its own parameters, with the paper's losses (Algorithm 1):
encoder: L_prior + L_llike; decoder: gamma * L_llike - L_GAN; discriminator: L_GAN. The decoder's -L_GAN is
its part of the game: gan_loss=minimax is that literal form (the decoder raises the discriminator's
cross-entropy on its fakes); gan_loss=non_saturating (default) labels the fakes real instead, the same game with
gradients that do not vanish while the discriminator wins (Goodfellow et al. 2014), the usual practical choice.

The authors' equilibrium gating (andersbll/autoencoding_beyond_pixels, vae_gan.py): with the discriminator's
cross-entropies on real and on fake examples measured each step, the discriminator skips its update while either
is below equilibrium - margin (it is far ahead), the decoder skips its update while either is above
equilibrium + margin (the discriminator is far behind); if both would skip, both update. A skipped phase's loss
function returns no terms, which the trainer takes as "no step for this phase". The encoder always updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.models.base import Diagnostics, Phase
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, gaussian_kl, reparameterize
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.schema import Annotated, OneOf, Range

GAN_LOSSES = ("non_saturating", "minimax")


def feature_matching(real: Tensor, fake: Tensor) -> Tensor:  # (B, F), (B, F) -> scalar
    """The paper's L_llike: the Gaussian negative log-likelihood of Dis_l(x) with mean Dis_l(x~) and identity
    covariance, constants dropped: 0.5 * squared distance summed over features, averaged over the batch."""
    return 0.5 * (real - fake).pow(2).flatten(1).sum(1).mean()


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def equilibrium_gate(real_cost: float, fake_cost: float, equilibrium: float, margin: float | None) -> tuple[bool, bool]:
    """(train the decoder, train the discriminator) from the discriminator's cross-entropies on real and fake
    examples, as the authors' code decides: D rests while far ahead, the decoder while D is far behind."""
    if margin is None:
        return True, True
    train_dis = not (real_cost < equilibrium - margin or fake_cost < equilibrium - margin)
    train_dec = not (real_cost > equilibrium + margin or fake_cost > equilibrium + margin)
    if not (train_dec or train_dis):
        return True, True
    return train_dec, train_dis


class Discriminator(nn.Module):
    """Dis_l: the arch's feature net; then the real/fake logit from those features."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], features: int) -> None:
        super().__init__()
        self.features = build_encoder(arch, input_shape, features, family="VAEGAN")
        for m in self.features.modules():  # an arch's BatchNorm normalises over the batch being judged, always:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # running averages would mix stale fakes into
                m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
        # each feature standardised over the judged batch (the paper's Dis_l is a BatchNorm'd conv layer): else
        # the discriminator, which L_llike does not train, inflates the distance by scaling its features as it
        # learns, and features dominated by what all images share (a per-example LayerNorm keeps that) leave the
        # decoder almost no signal (burgess_conv on TINY: the feature distance stalled at 70% of its start)
        self.norm = nn.BatchNorm1d(features, affine=False, track_running_stats=False)
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(features, 1))

    # (evaluation's features, and the judge's verdicts would then depend on how many steps ago it saw them)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, ...) -> Dis_l features (B, F), logits (B,)
        h = self.norm(self.features(x))  # Dis_l: before the nonlinearity, as the paper takes it
        return h, self.head(h).squeeze(1)


class VAEGAN(VAE):
    """gamma: the decoder's weight on L_llike against the GAN loss; disc_features: the width of Dis_l;
    disc_lr_scale: the discriminator's learning rate over the VAE's; equilibrium, margin: the authors' gating
    (margin null: every player updates every step)."""
    directions = {"adv_gen": None, "adv_disc": None, "disc_real": None, "disc_fake": None,  # opposing players
                  "pixel_recon": "min"}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 gamma: Annotated[float, Range(0, None)] = 1.0,
                 disc_features: Annotated[int, Range(1, None)] = 256,
                 disc_lr_scale: Annotated[float, Range(0, None, low_open=True)] = 0.1,
                 equilibrium: Annotated[float, Range(0, None, low_open=True)] = 0.68,
                 margin: Annotated[float | None, Range(0, None)] = 0.35,
                 gan_loss: Annotated[str, OneOf(GAN_LOSSES)] = "non_saturating",
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, 1.0, likelihood, input_noise, num_classes)
        self.gamma, self.gan_loss = float(gamma), gan_loss
        self.disc_lr_scale, self.equilibrium = float(disc_lr_scale), float(equilibrium)
        self.margin = None if margin is None else float(margin)
        self.discriminator = Discriminator(arch, self.input_shape, int(disc_features))

    # ---- the pieces -----------------------------------------------------------------------
    def judge(self, *images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Dis_l features and logits of each batch of images, in one pass (BatchNorm sees them together)."""
        sizes = [len(x) for x in images]
        features, logits = self.discriminator(torch.cat(images))
        return list(features.split(sizes)), list(logits.split(sizes))

    def reconstruct_train(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:  # x~ (B, ...), mu, logvar
        mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
        return self.likelihood.mean(self.decode(reparameterize(mu, logvar))), mu, logvar

    def from_prior(self, n: int) -> Tensor:  # x_p (n, ...): decoded prior draws
        return self.likelihood.mean(self.decode(self.prior(n)))

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """The decoder's share of the game on its fakes' logits: -L_GAN's fake part, or its non-saturating form."""
        if self.gan_loss == "minimax":
            return -_bce(fake_logits, real=False)
        return _bce(fake_logits, real=True)

    def gate(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[bool, bool]:
        """(train the decoder, train the discriminator) this step: one host sync, only when gating is on."""
        if self.margin is None:
            return True, True
        costs = torch.stack([_bce(real_logits.detach(), True), _bce(fake_logits.detach(), False)]).float().tolist()
        return equilibrium_gate(costs[0], costs[1], self.equilibrium, self.margin)

    # ---- the phases -----------------------------------------------------------------------
    def encoder_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        x_tilde, mu, logvar = self.reconstruct_train(batch)
        (real, fake), _ = self.judge(batch.x, x_tilde)
        return {"kl": gaussian_kl(mu, logvar).mean(0).sum(), "feature_recon": feature_matching(real, fake)}

    def decoder_losses(self, batch: Batch, step: int, gated: bool = False) -> dict[str, Tensor]:
        with torch.no_grad():  # the decoder's phase: the code is an input here
            mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
            z = reparameterize(mu, logvar)
        x_tilde, x_p = self.likelihood.mean(self.decode(z)), self.from_prior(len(batch))
        (real, fake, _), (real_logits, fake_logits, prior_logits) = self.judge(batch.x, x_tilde, x_p)
        fakes = torch.cat([fake_logits, prior_logits])
        if gated and not self.gate(real_logits, fakes)[0]:
            return {}  # the discriminator is far behind: the decoder rests this step
        return {"feature_recon_dec": self.gamma * feature_matching(real, fake), "adv_gen": self.generator_loss(fakes)}

    def discriminator_losses(self, batch: Batch, step: int, gated: bool = False) -> dict[str, Tensor]:
        with torch.no_grad():
            x_tilde, _, _ = self.reconstruct_train(batch)
            x_p = self.from_prior(len(batch))
        _, (real, fake, prior) = self.judge(batch.x, x_tilde, x_p)
        if gated and not self.gate(real, torch.cat([fake, prior]))[1]:
            return {}  # the discriminator is far ahead: it rests this step
        return {"adv_disc": _bce(real, True) + _bce(fake, False) + _bce(prior, False)}  # -L_GAN: its cross-entropy

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return {**self.encoder_losses(batch, step), **self.decoder_losses(batch, step),
                **self.discriminator_losses(batch, step)}

    def phases(self) -> list[Phase]:
        return [Phase("encoder", list(self.encoder.parameters()), loss=self.encoder_losses),
                Phase("decoder", list(self.decoder.parameters()),
                      loss=lambda batch, step: self.decoder_losses(batch, step, gated=True)),
                Phase("discriminator", list(self.discriminator.parameters()), lr_scale=self.disc_lr_scale,
                      loss=lambda batch, step: self.discriminator_losses(batch, step, gated=True))]

    @property
    def monitor(self) -> str:
        """The players' terms oppose each other and the feature distance moves with the discriminator: the
        pixel reconstruction of the posterior mean is the number that says which epoch reconstructs best."""
        return "pixel_recon"

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the pixel-space reconstruction NLL of the posterior mean and the discriminator's mean belief
        that real examples (disc_real) and decoded prior draws (disc_fake) are real."""
        out = super().diagnostics(batch)
        mu, _ = self.posterior(batch.x, batch.y)
        out.scalars["pixel_recon"] = float(self.likelihood.batch_nll(self.decode(mu).float(), batch.x))
        _, (real, prior) = self.judge(batch.x, self.from_prior(len(batch)))
        out.scalars["disc_real"] = float(torch.sigmoid(real.float()).mean())
        out.scalars["disc_fake"] = float(torch.sigmoid(prior.float()).mean())
        return out
