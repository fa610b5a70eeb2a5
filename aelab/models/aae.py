"""Adversarial autoencoder (Makhzani et al. 2016): a discriminator on the code pulls it onto a chosen prior.

Three optimiser phases per step: reconstruction (encoder + decoder), generator (the encoder fools the
discriminator) and discriminator (tells prior draws from codes). adv_weight weighs the generator's terms and
scales its learning rate: with an adaptive optimiser (Adam) a phase's step does not change with its loss scale. With a label part a
classification phase (the encoder's label part on the known labels) follows reconstruction, as in the paper:
its own optimiser step keeps the small cross-entropy from drowning in the reconstruction gradient.

Options: supervised feeds the one-hot label to the discriminator, so each class lands in its own prior
region (a grid patch or mixture mode; grid_extra adds patches below the lattice, e.g. a tenth for ten classes). disentangle and semi_supervised_fraction split the encoder output
into a categorical label part and a style code (the code `encode` returns); the decoder reads both.
disentangle adds an adversary that tries to read the label from the style (the encoder tries to leave it
guessing); semi_supervised_fraction trains the label part on only that fraction of the labels, and
matches the predicted label of the unlabelled rest to a categorical prior with a second discriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.base import Autoencoder, Condition, Diagnostics, Phase, require_labels
from aelab.models.likelihoods import LIKELIHOODS
from aelab.models.priors import PRIORS, LatentPrior, check_prior_options
from aelab.nets import Arch
from aelab.nets.mlp import mlp
from aelab.schema import Annotated, OneOf, Range


def _real(logits: Tensor) -> Tensor:  # discriminator logits (B, 1) -> BCE against "prior"
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def _fake(logits: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def _mean_or_zero(values: Tensor, like: Tensor) -> Tensor:
    """Mean of a possibly empty selection; an empty one is 0 and keeps the graph of `like`."""
    return values.mean() if values.numel() else like.sum() * 0.0


def hash_fraction(index: Tensor) -> Tensor:  # (B,) int -> (B,) in [0, 1): a fixed pseudo-random number per example
    return ((index.long() * 2654435761) % 4294967296).double().div(4294967296.0)


class AAE(Autoencoder):
    directions = {"adv_gen": None, "adv_gen_label": None, "adv_disc": None, "adv_disc_label": None, "accuracy": "max"}
    has_prior = True

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        check_prior_options(options, key)

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 prior: Annotated[str, OneOf(PRIORS)] = "gaussian",
                 adv_weight: Annotated[float, Range(0, None)] = 1.0, supervised: bool = False, disentangle: bool = False,
                 semi_supervised_fraction: Annotated[float | None, Range(0, 1, low_open=True)] = None,
                 grid_size: Annotated[int, Range(1, None)] = 3, grid_extra: Annotated[int, Range(0, None)] = 0,
                 disc_hidden: Annotated[tuple[int, ...], Range(1, None)] = (256, 256),
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None) -> None:
        label_part = bool(disentangle) or semi_supervised_fraction is not None
        if supervised or label_part:
            require_labels(num_classes, "aae", "with supervised, disentangle or semi_supervised_fraction uses labels")
        k = int(num_classes or 0)
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes,
                         condition=Condition(k, encoder=False) if label_part else None)
        self.label_part = label_part
        self.prior = LatentPrior(prior, self.latent_dim, num_classes, grid_size, grid_extra)
        if supervised and (self.prior.regions or 0) < k:
            raise UserError("model.supervised", f"needs a prior with a region for each of the {k} classes",
                            "model.prior=mixture, or prior=grid with model.grid_size**2 + model.grid_extra >= classes")
        self.adv_weight, self.supervised, self.disentangle = float(adv_weight), bool(supervised), bool(disentangle)
        self.semi_supervised_fraction = None if semi_supervised_fraction is None else float(semi_supervised_fraction)
        hidden = list(disc_hidden)
        self.encoder = arch.encoder(self.input_shape, self.latent_dim + (k if self.label_part else 0))
        self.decoder = arch.decoder(self.decoder_features(), self.input_shape)
        self.discriminator = mlp([self.latent_dim + (k if supervised else 0), *hidden, 1], "leaky_relu")
        self.label_discriminator = mlp([k, *hidden, 1], "leaky_relu") if self.semi_supervised_fraction else None
        self.style_adversary = mlp([self.latent_dim, *hidden, k], "leaky_relu") if self.disentangle else None

    # ---- the interface --------------------------------------------------------------------
    def split_code(self, x: Tensor) -> tuple[Tensor, Tensor | None]:  # (B, D) style, (B, K) label logits or None
        h = self.encoder(x)
        return h[:, : self.latent_dim], (h[:, self.latent_dim :] if self.label_part else None)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.split_code(x)[0]

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(self.decoder_input(z, y))

    def phases(self) -> list[Phase]:
        adversaries = [m for m in (self.discriminator, self.label_discriminator, self.style_adversary) if m is not None]
        classification = [Phase("classification", list(self.encoder.parameters()), loss=self.classification_losses)]
        return [
            Phase("reconstruction", [*self.encoder.parameters(), *self.decoder.parameters()],
                  loss=self.reconstruction_losses),
            *(classification if self.label_part else []),
            Phase("generator", list(self.encoder.parameters()), lr_scale=self.adv_weight, loss=self.generator_losses),
            Phase("discriminator", [p for m in adversaries for p in m.parameters()], loss=self.discriminator_losses),
        ]

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        classification = self.classification_losses(batch, step) if self.label_part else {}
        return {**self.reconstruction_losses(batch, step), **classification, **self.generator_losses(batch, step),
                **self.discriminator_losses(batch, step)}

    @property
    def monitor(self) -> str:
        return "recon"  # the players' losses oppose each other: their sum says nothing about the model

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        y = self.default_labels(n) if y is None else y  # a label part decodes with labels; else None: the whole prior
        codes = self.prior.sample(n, y if self.supervised else None, self.device)
        return self.likelihood.mean(self.decode(codes, y))

    def prior_codes(self, n: int) -> Tensor:  # (n, latent_dim)
        """Codes drawn from the prior the discriminator matches: every class's region in turn when supervised."""
        y = torch.arange(n, device=self.device) % int(self.num_classes) if self.supervised else None  # type: ignore[arg-type]
        return self.prior.sample(n, y, self.device)

    def prior_quantile(self, p: Tensor) -> Tensor:  # (P,) -> (P, latent_dim): the grid's y axis reaches below x's
        return self.prior.quantile(p)

    @property
    def samples_by_class(self) -> bool:
        return self.conditional or self.supervised

    # ---- the phases -----------------------------------------------------------------------
    def labelled(self, batch: Batch) -> Tensor:  # (B,) bool
        """Which examples' labels training may use: a fixed pseudo-random fraction of the training examples."""
        everything = torch.ones(len(batch), dtype=torch.bool, device=batch.x.device)
        if self.semi_supervised_fraction is None or not self.training or batch.index is None:
            return everything
        return hash_fraction(batch.index).to(batch.x.device) < self.semi_supervised_fraction

    def reconstruction_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        style, logits = self.split_code(self.corrupt(batch.x))
        if logits is None:
            return {"recon": self.likelihood.batch_nll(self.decode(style, batch.y), batch.x)}
        known = self.labelled(batch)
        label = torch.where(known[:, None], self.condition.one_hot(batch.y), logits.softmax(1))  # type: ignore[union-attr]
        return {"recon": self.likelihood.batch_nll(self.decoder(torch.cat([style, label], 1)), batch.x)}

    def classification_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """Cross-entropy of the label part on the examples whose labels training may use."""
        _, logits = self.split_code(self.corrupt(batch.x))
        known = self.labelled(batch)
        ce = F.cross_entropy(logits[known], batch.y[known], reduction="none")  # type: ignore[index]
        return {"label": _mean_or_zero(ce, logits)}

    def generator_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        style, logits = self.split_code(self.corrupt(batch.x))
        terms = {"adv_gen": self.adv_weight * _real(self.discriminator(self._with_label(style, batch.y)))}
        if self.label_discriminator is not None:
            unknown = logits.softmax(1)[~self.labelled(batch)]  # type: ignore[union-attr]
            fooled = _real(self.label_discriminator(unknown)) if len(unknown) else logits.sum() * 0.0  # type: ignore[union-attr]
            terms["adv_gen_label"] = self.adv_weight * fooled
        if self.style_adversary is not None:  # cross-entropy to the uniform guess: the style tells nothing
            guess = self.style_adversary(style).log_softmax(1)
            terms["style_confusion"] = self.adv_weight * -guess.mean()
        return terms

    def discriminator_losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        with torch.no_grad():
            style, logits = self.split_code(self.corrupt(batch.x))
        drawn = self.prior.sample(len(batch), batch.y if self.supervised else None, style.device)
        terms = {"adv_disc": _real(self.discriminator(self._with_label(drawn, batch.y)))
                 + _fake(self.discriminator(self._with_label(style, batch.y)))}
        if self.label_discriminator is not None:
            unknown = logits.softmax(1)[~self.labelled(batch)]  # type: ignore[union-attr]
            one_hot = F.one_hot(torch.randint(unknown.shape[1], (len(batch),), device=style.device), unknown.shape[1])
            fake = _fake(self.label_discriminator(unknown)) if len(unknown) else style.sum() * 0.0
            terms["adv_disc_label"] = _real(self.label_discriminator(one_hot.float())) + fake
        if self.style_adversary is not None:
            known = self.labelled(batch)
            ce = F.cross_entropy(self.style_adversary(style[known]), batch.y[known], reduction="none")  # type: ignore[index]
            terms["style_adversary"] = _mean_or_zero(ce, style)
        return terms

    def _with_label(self, z: Tensor, y: Tensor | None) -> Tensor:
        """The discriminator's input: the code, with the one-hot label when supervised."""
        if not self.supervised:
            return z
        return torch.cat([z, F.one_hot(y.long(), int(self.num_classes)).float()], 1)  # type: ignore[union-attr]

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Adds the label part's classification accuracy (semi-supervised / disentangled AAEs)."""
        out = super().diagnostics(batch)
        _, logits = self.split_code(batch.x)
        if logits is not None and batch.y is not None:
            out.scalars["accuracy"] = float((logits.argmax(1) == batch.y).float().mean())
        return out
