"""Plain (deterministic) autoencoder; with noise > 0 it is trained as a denoising AE."""

from __future__ import annotations

from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder
from aelab.nets import Arch


class AE(Autoencoder):
    def __init__(self, arch: Arch, input_shape: tuple[int, int, int], latent_dim: int,
                 likelihood: str = "bernoulli", input_noise: float = 0.0, num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        self.encoder = arch.encoder(self.input_shape, self.latent_dim)
        self.decoder = arch.decoder(self.latent_dim, self.input_shape)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        logits = self.decode(self.encode(self.corrupt(batch.x)))
        return {"recon": self.likelihood.batch_nll(logits, batch.x)}
