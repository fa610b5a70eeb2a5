"""Conditional VAE: the one-hot label is concatenated to the decoder input and, by default, the encoder's.

`sample(n, y)` draws images of chosen classes; encoding an image of class a and decoding with label b
transfers its style (TensorBoard shows this as val/style_transfer).
"""

from __future__ import annotations

from aelab.models.base import Condition, require_labels
from aelab.models.vae import VAE
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range


class CVAE(VAE):
    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 beta: Annotated[float, Range(0, None)] = 1.0, likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli",
                 input_noise: Annotated[float, Range(0, None)] = 0.0, num_classes: int | None = None,
                 condition_encoder: bool = True) -> None:
        classes = require_labels(num_classes, "cvae", "decodes with the class label")
        super().__init__(arch, input_shape, latent_dim, beta, likelihood, input_noise, num_classes,
                         condition=Condition(classes, encoder=condition_encoder))
