"""Plain (deterministic) autoencoder, optionally with L2 weight decay; the base of dae, sparse_ae and cae."""

from __future__ import annotations

from torch import Tensor

from aelab.data.base import Batch
from aelab.models.base import Autoencoder, Condition
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.nets.adapter import build_encoder
from aelab.schema import Annotated, OneOf, Range


class AE(Autoencoder):
    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None, weight_decay: Annotated[float, Range(0, None)] = 0.0,
                 condition: Condition | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, condition)
        self.weight_decay = float(weight_decay)
        extra = condition.encoder_features if condition is not None else 0
        self.encoder = build_encoder(arch, self.input_shape, self.latent_dim, extra, family=type(self).__name__)
        self.decoder = arch.decoder(self.decoder_features(), self.input_shape)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encoder(x, self.encoder_condition(y))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(self.decoder_input(z, y))

    def code_penalties(self, z: Tensor) -> dict[str, Tensor]:
        """Extra terms on the training codes (B, D): the hook sparse AEs fill."""
        return {}

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        z = self.encode(self.corrupt(batch.x), batch.y)
        terms = {"recon": self.likelihood.batch_nll(self.decode(z, batch.y), batch.x), **self.code_penalties(z)}
        if self.weight_decay > 0:
            terms["weight_decay"] = self.weight_decay * self.squared_weights()
        return terms

    def squared_weights(self) -> Tensor:
        """Sum of squared weight matrices / kernels (biases and norm scales are not decayed)."""
        return sum(p.pow(2).sum() for p in self.parameters() if p.ndim > 1)
