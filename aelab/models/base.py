"""The interface every autoencoder family implements; engine, commands and views use only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from aelab.data.base import Batch
from aelab.errors import UserError
from aelab.models.likelihoods import make_likelihood
from aelab.nets import Arch


@dataclass(frozen=True)
class Phase:
    """One optimiser step per training step: the parameters it owns and the loss terms it minimises."""

    name: str
    parameters: list[nn.Parameter]
    terms: tuple[str, ...] | None = None  # None: every term the model returns
    lr_scale: float = 1.0


class NoPriorError(UserError):
    pass


class Autoencoder(nn.Module):
    """Base family: an arch-built encoder/decoder pair plus a reconstruction likelihood.

    Subclasses implement encode / decode / losses; families with a prior set
    has_prior and implement sample; multi-optimiser families override phases.
    """

    has_prior: ClassVar[bool] = False

    def __init__(self, arch: Arch, input_shape: tuple[int, int, int], latent_dim: int,
                 likelihood: str = "bernoulli", input_noise: float = 0.0, num_classes: int | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = make_likelihood(likelihood)
        self.input_noise = float(input_noise)
        self.num_classes = num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, latent_dim)
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:  # (B, C, H, W) logits
        raise NotImplementedError

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean reconstruction in data space."""
        return self.likelihood.mean(self.decode(self.encode(x, y), y))

    def corrupt(self, x: Tensor) -> Tensor:
        """Gaussian input noise of std `noise` during training (the target stays clean)."""
        if self.input_noise <= 0 or not self.training:
            return x
        return x + self.input_noise * torch.randn_like(x)

    def phases(self) -> list[Phase]:
        return [Phase("main", [p for p in self.parameters() if p.requires_grad])]

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n images from the prior (B, C, H, W) in data space."""
        raise NoPriorError("model", f"{type(self).__name__} has no prior to sample from",
                           "families with a prior, e.g. model=vae")
