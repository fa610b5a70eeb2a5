"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric").

A VAE whose reconstruction error is measured in a hidden layer of a GAN discriminator (Dis_l) instead of in
pixels, and whose decoder also plays the GAN's generator against that discriminator.

  L_prior  = KL(q(z|x) || N(0, I))
  L_llike  = -log N(Dis_l(x) | Dis_l(x~), I) = 0.5 * ||Dis_l(x) - Dis_l(x~)||^2 (+ a constant), x~ = Dec(z), z ~ q(z|x)
  L_GAN    = the discriminator's cross-entropy on x (real), x~ and x_p = Dec(z_p), z_p ~ N(0, I) (fakes)

Three optimiser phases per step, each over its own parameters (the paper's Algorithm 1): encoder
L_prior + L_llike; decoder gamma * L_llike - L_GAN; discriminator L_GAN. gan_loss=non_saturating (default) gives
the decoder the fakes-labelled-real form of -L_GAN (Goodfellow et al. 2014: the same game, with gradients that do
not vanish while the discriminator wins); minimax is the literal form.

The discriminator is the arch's encoder net with one output unit (the real/fake logit), so it works on every arch
(mlp, conv, burgess_conv, one of yours). Dis_l is the output of one of its hidden activation layers, picked by
`feature_layer` (Python indexing over the activation modules in the order the net registers them, which is the
forward order of sequential nets such as aelab's; -1: the deepest, the layer before the verdict). The paper takes
a conv layer that still has spatial structure (the 3rd of 4): on arch=conv the deepest activation is the last conv
block's feature map, which is that kind of layer.

The authors' equilibrium gating (resting a player that is far ahead) is not here: the engine steps every phase
every step, so that ranks under DDP never disagree on which optimiser steps; the discriminator's learning rate
(disc_lr_scale) keeps the game even instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Diagnostics, Phase
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.vae import VAE, gaussian_kl, reparameterize
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.nets.mlp import ACTIVATIONS
from aelab.schema import Annotated, OneOf, Range

GAN_LOSSES = ("non_saturating", "minimax")
# feature_layer's bound when the config is checked, before any net exists (aelab's archs have 2 to 6 activations);
# the discriminator, once built, refuses an index its own net lacks
MAX_LAYERS = 32
# the layers whose outputs can be Dis_l: every activation aelab's archs use, and the usual others
TAPPABLE = (*ACTIVATIONS.values(), nn.ReLU6, nn.PReLU, nn.SELU, nn.CELU, nn.Mish, nn.Hardtanh, nn.Softplus)


def feature_matching(real: Tensor, fake: Tensor) -> Tensor:  # (B, F), (B, F) -> scalar
    """The paper's L_llike: the Gaussian negative log-likelihood of Dis_l(x) with mean Dis_l(x~) and identity
    covariance, constants dropped: 0.5 * squared distance summed over features, averaged over the batch."""
    return 0.5 * (real - fake).pow(2).flatten(1).sum(1).mean()


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class Discriminator(nn.Module):
    """The arch's encoder net to one logit; a forward hook keeps Dis_l, the output of its `layer`-th activation."""

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], layer: int) -> None:
        super().__init__()
        self.net = build_encoder(arch, input_shape, 1, family="vae_gan")
        for m in self.net.modules():  # BatchNorm normalises over the batch being judged, always: running averages
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # would mix stale fakes into evaluation's verdicts
                m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
        taps = [m for m in self.net.modules() if isinstance(m, TAPPABLE)]
        if not taps:
            raise UserError("arch", f"{type(arch).__name__}'s encoder has no activation layer for Dis_l",
                            "an arch whose encoder uses nn activation modules (ReLU, LeakyReLU, ...)")
        if not -len(taps) <= layer < len(taps):
            raise UserError("model.feature_layer", f"got {layer}, and this arch's discriminator has {len(taps)} "
                            "hidden activations", f"an index from {-len(taps)} to {len(taps) - 1} (-1: the deepest)")
        self._features: Tensor | None = None
        taps[layer].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._features = output

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, ...) -> Dis_l features (B, F), logits (B,)
        logits = self.net(x).squeeze(1)
        features, self._features = self._features, None  # drop the reference: no graph outlives the call
        return features.flatten(1), logits


class VAEGAN(VAE):
    """gamma: the decoder's weight on L_llike against the GAN loss; feature_layer: which hidden activation of
    the discriminator is Dis_l; disc_lr_scale: the discriminator's learning rate over the VAE's."""
    directions = {"adv_gen": None, "adv_disc": None, "disc_real": None, "disc_fake": None,  # opposing players
                  "pixel_recon": "min"}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 gamma: Annotated[float, Range(0, None)] = 0.003,
                 feature_layer: Annotated[int, Range(-MAX_LAYERS, MAX_LAYERS - 1)] = -1,
                 disc_lr_scale: Annotated[float, Range(0, None, low_open=True)] = 0.1,
                 gan_loss: Annotated[str, OneOf(GAN_LOSSES)] = "non_saturating",
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, 1.0, likelihood, input_noise, num_classes)
        self.gamma, self.gan_loss, self.disc_lr_scale = float(gamma), gan_loss, float(disc_lr_scale)
        self.discriminator = Discriminator(arch, self.input_shape, int(feature_layer))

    # ---- the pieces -----------------------------------------------------------------------
    def judge(self, *images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Dis_l features and logits of each batch of images, in one pass (BatchNorm sees them together)."""
        sizes = [len(x) for x in images]
        features, logits = self.discriminator(torch.cat(images))
        return list(features.split(sizes)), list(logits.split(sizes))

    def _images(self, z: Tensor) -> Tensor:  # codes -> images in the data's range, what the discriminator judges
        return self.likelihood.mean(self.decode(z))

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """The decoder's share of the game on its fakes' logits: -L_GAN's fake part, or its non-saturating form."""
        if self.gan_loss == "minimax":
            return -_bce(fake_logits, real=False)
        return _bce(fake_logits, real=True)

    # ---- the phases -----------------------------------------------------------------------
    def encoder_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
        (real, fake), _ = self.judge(batch.x, self._images(reparameterize(mu, logvar)))
        return {"kl": gaussian_kl(mu, logvar).sum(1).mean(), "feature_recon": feature_matching(real, fake)}

    def decoder_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        with torch.no_grad():  # the decoder's phase: the code is an input here
            mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
            z = reparameterize(mu, logvar)
        (real, fake, _), (_, fake_logits, prior_logits) = self.judge(batch.x, self._images(z),
                                                                     self._images(self.prior(len(batch))))
        return {"feature_recon_dec": self.gamma * feature_matching(real.detach(), fake),
                "adv_gen": self.generator_loss(torch.cat([fake_logits, prior_logits]))}

    def discriminator_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        with torch.no_grad():
            mu, logvar = self.posterior(self.corrupt(batch.x), batch.y)
            x_tilde = self._images(reparameterize(mu, logvar))
            x_p = self._images(self.prior(len(batch)))
        _, (real, fake, prior) = self.judge(batch.x, x_tilde, x_p)
        return {"adv_disc": _bce(real, True) + 0.5 * (_bce(fake, False) + _bce(prior, False))}

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        return {**self.encoder_losses(batch, step), **self.decoder_losses(batch, step),
                **self.discriminator_losses(batch, step)}

    def phases(self) -> list[Phase]:
        return [Phase("encoder", list(self.encoder.parameters()), loss=self.encoder_losses),
                Phase("decoder", list(self.decoder.parameters()), loss=self.decoder_losses),
                Phase("discriminator", list(self.discriminator.parameters()), lr_scale=self.disc_lr_scale,
                      loss=self.discriminator_losses)]

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
        _, (real, prior) = self.judge(batch.x, self._images(self.prior(len(batch))))
        out.scalars["disc_real"] = float(torch.sigmoid(real.float()).mean())
        out.scalars["disc_fake"] = float(torch.sigmoid(prior.float()).mean())
        return out
