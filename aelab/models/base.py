"""The interface every autoencoder family implements; engine, commands and views use only this."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.data.base import Batch, Split
from aelab.errors import UserError
from aelab.models.likelihoods import make_likelihood
from aelab.nets import Arch


@dataclass(frozen=True)
class Phase:
    """One optimiser step per training step: the parameters it owns and the loss terms it minimises."""

    name: str
    parameters: list[nn.Parameter]
    terms: tuple[str, ...] | None = None  # None: every term the loss returns
    lr_scale: float = 1.0
    loss: Callable[[Batch, int], dict[str, Tensor]] | None = None  # only the terms this phase needs; None: model.losses


@dataclass(frozen=True)
class Picture:
    """Images to show as a grid, `per_row` to a row; the viewer (viz) lays them out, so models never draw."""

    images: Tensor  # (N, C, H, W) in [0, 1]
    per_row: int = 8


@dataclass
class Diagnostics:
    """What a family shows beyond its loss terms, computed on validation data once per epoch."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)
    images: dict[str, Picture] = field(default_factory=dict)


SHOWN = 24  # examples in the pictures diagnostics draw


class NoPriorError(UserError):
    pass


def require_labels(num_classes: int | None, family: str, why: str) -> int:
    """The number of classes, or a one-line error for a family that needs labelled data."""
    if not num_classes:
        raise UserError("model", f"{family} {why}, but the data has no labels",
                        "labelled data, e.g. data=mnist or data=toy2d; for data=csv set data.label_column")
    return int(num_classes)


class Condition:
    """One-hot class labels concatenated to the decoder input (and optionally the encoder's)."""

    def __init__(self, num_classes: int, encoder: bool) -> None:
        self.num_classes, self.encoder = int(num_classes), bool(encoder)

    @property
    def encoder_features(self) -> int:
        return self.num_classes if self.encoder else 0

    def one_hot(self, y: Tensor | None) -> Tensor:  # (B,) -> (B, K)
        if y is None:
            raise UserError("model", "a conditional model needs class labels to decode", "pass labels (y)")
        return F.one_hot(y.long(), self.num_classes).float()


class Autoencoder(nn.Module):
    """Base family: an arch-built encoder/decoder pair plus a reconstruction likelihood.

    Subclasses implement encode / decode / losses; families with a prior set
    has_prior and implement sample; multi-optimiser families override phases;
    closed-form families override fit_closed_form and declare no phases.
    """

    has_prior: ClassVar[bool] = False
    has_posterior: ClassVar[bool] = False  # posterior(x, y) -> (mu, logvar): a Gaussian q(z|x) (ELBO, IS-NLL)
    # How the family's own metric names read, where "lower is better" would be wrong or where only the family
    # knows: its diagnostics, and loss terms that are no model's quality (opposing players). "max": higher is
    # better, None: no better side. A loss term not named here is "min": it is what training minimises. A family
    # adds to its parents' (metric_directions merges them); the checkpoint monitor and `aelab report` ask this.
    directions: ClassVar[dict[str, str | None]] = {}
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "vectors")  # what one example may be: (C, H, W) and/or (D,)

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: int,
                 likelihood: str = "bernoulli", input_noise: float = 0.0, num_classes: int | None = None,
                 condition: Condition | None = None) -> None:
        super().__init__()
        kind = "images" if len(input_shape) == 3 else "vectors"
        if kind not in self.data_kinds:  # the family's declaration: refused before any module is built
            family = type(self).__name__
            raise UserError("model", f"{family} takes {' or '.join(self.data_kinds)}, the data's examples are {kind} "
                            f"of shape {list(input_shape)}", f"{' or '.join(self.data_kinds)} data")
        self.input_shape = tuple(input_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = make_likelihood(likelihood)
        self.input_noise = float(input_noise)
        self.num_classes = num_classes
        self.condition = condition  # set by conditional subclasses, not a config key

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    @property
    def monitor(self) -> str:
        """The validation scalar (no split prefix) whose best value marks the best model (best.pt, early
        stopping); families whose loss sum does not mean "better" (opposing players, a weight schedule) override."""
        return "loss"

    @classmethod
    def metric_directions(cls) -> dict[str, str | None]:
        """The directions this family and its parents declare (the nearest class wins)."""
        merged: dict[str, str | None] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("directions", {}))
        return merged

    @property
    def conditional(self) -> bool:
        """Whether decode needs a class label (views then decode per class)."""
        return self.condition is not None

    @property
    def samples_by_class(self) -> bool:
        """Whether sample(n, y) draws the given classes."""
        return self.conditional

    @property
    def images(self) -> bool:
        """Whether one example is an image (C, H, W) rather than a vector (D,)."""
        return len(self.input_shape) == 3

    # ---- the interface --------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, latent_dim)
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:  # (B, *input_shape) logits
        raise NotImplementedError

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, batch: Batch, step: int, loss_fn=None) -> dict[str, Tensor]:
        """The loss terms (of one phase's loss_fn, default losses): the call DistributedDataParallel wraps."""
        return (loss_fn or self.losses)(batch, step)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean reconstruction in data space."""
        return self.likelihood.mean(self.decode(self.encode(x, y), y))

    def phases(self) -> list[Phase]:
        return [Phase("main", [p for p in self.parameters() if p.requires_grad])]

    def fit_closed_form(self, train: Split, batch_size: int = 1024) -> None:
        """Fit without gradient descent before training starts (closed-form families); others: nothing."""

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n examples from the prior (B, *input_shape) in data space."""
        raise NoPriorError("model", f"{type(self).__name__} has no prior to sample from",
                           "families with a prior, e.g. model=vae")

    def prior_quantile(self, p: Tensor) -> Tensor:
        """Quantiles of one code coordinate under the prior, for decoded latent grids (standard normal here)."""
        return torch.distributions.Normal(0.0, 1.0).icdf(p)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        """Family-specific pictures and numbers on a validation batch; subclasses extend super()'s."""
        out = Diagnostics()
        x, y = batch.x[:SHOWN], None if batch.y is None else batch.y[:SHOWN]
        if self.images and self.corrupts:
            noisy = self.add_noise(x)
            out.images["denoising"] = _rows([noisy, self.reconstruct(noisy, y), x], per_row=8)
        if self.images and self.conditional and batch.y is not None:
            out.images["style_transfer"] = self._style_transfer(batch)
        return out

    # ---- shared pieces for subclasses -----------------------------------------------------
    def encoder_condition(self, y: Tensor | None) -> Tensor | None:
        """The one-hot label for an encoder conditioned on it, else None."""
        return self.condition.one_hot(y) if self.condition is not None and self.condition.encoder else None

    def decoder_input(self, z: Tensor, y: Tensor | None) -> Tensor:  # (B, D) -> (B, D [+ K])
        return z if self.condition is None else torch.cat([z, self.condition.one_hot(y)], dim=1)

    def decoder_features(self) -> int:
        return self.latent_dim + (self.condition.num_classes if self.condition is not None else 0)

    def default_labels(self, n: int) -> Tensor | None:
        """Labels cycling through the classes, for conditional decoding when none are given."""
        if self.condition is None:
            return None
        return torch.arange(n, device=self.device) % self.condition.num_classes

    @property
    def corrupts(self) -> bool:
        """Whether training corrupts the input (then views show denoising)."""
        return self.input_noise > 0

    def add_noise(self, x: Tensor) -> Tensor:
        """The training corruption: Gaussian noise of std `noise` (the target stays clean)."""
        return x + self.input_noise * torch.randn_like(x)

    def corrupt(self, x: Tensor) -> Tensor:
        """The input corruption, during training only."""
        return self.add_noise(x) if self.training and self.corrupts else x

    def _style_transfer(self, batch: Batch) -> Picture:
        """Rows: one input per class, then its code decoded with every label (style kept, class swapped)."""
        k = self.condition.num_classes  # type: ignore[union-attr]
        first = [int((batch.y == c).nonzero()[0]) for c in range(k) if (batch.y == c).any()]
        x, y = batch.x[first], batch.y[first]
        z = self.encode(x, y)  # (R, D)
        rows = []
        for i in range(len(first)):
            labels = torch.arange(k, device=x.device)
            decoded = self.likelihood.mean(self.decode(z[i : i + 1].expand(k, -1), labels))
            rows.append(torch.cat([x[i : i + 1], decoded]))
        return _rows([torch.cat(rows)], per_row=k + 1)


def _rows(parts: list[Tensor], per_row: int) -> Picture:
    """Interleave equally long image batches row by row into one picture."""
    if len(parts) == 1:
        return Picture(parts[0], per_row)
    rows = []
    for start in range(0, parts[0].shape[0], per_row):
        rows += [p[start : start + per_row] for p in parts]
    return Picture(torch.cat(rows), per_row)
