"""Conditional autoencoder: the one-hot label is concatenated to the decoder input (optionally the encoder's too)."""

from __future__ import annotations

from aelab.models.ae import AE
from aelab.models.base import Condition, require_labels
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range


class CAE(AE):
    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None, weight_decay: Annotated[float, Range(0, None)] = 0.0,
                 condition_encoder: bool = False) -> None:
        classes = require_labels(num_classes, "cae", "decodes with the class label")
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes, weight_decay,
                         condition=Condition(classes, encoder=condition_encoder))
