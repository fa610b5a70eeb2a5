"""The course's 2-D toy data: two disjoint noisy shapes, a sine arc and a small circle, labelled 0 and 1."""

from __future__ import annotations

import math

import torch

from aelab.data.sources import TensorData
from aelab.errors import UserError
from aelab.schema import Annotated, Range


def load_toy2d(n_per_shape: Annotated[int, Range(2, None)] = 2000, noise: Annotated[float, Range(0, None)] = 0.06,
               seed: Annotated[int, Range(0, None)] = 0) -> TensorData:
    """Sine arc y = sin x for x in [-2.2, 2.2] and a circle of radius 0.5 around (1.5, -0.5), Gaussian noise."""
    if n_per_shape < 2:
        raise UserError("data.source.n_per_shape", f"got {n_per_shape}", "an integer >= 2")
    if noise < 0:
        raise UserError("data.source.noise", f"got {noise}", "a number >= 0")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_per_shape, generator=g) * 4.4 - 2.2
    arc = torch.stack([x, torch.sin(x)], dim=1)  # (n, 2)
    angle = torch.rand(n_per_shape, generator=g) * (2 * math.pi)
    circle = torch.stack([1.5 + 0.5 * angle.cos(), -0.5 + 0.5 * angle.sin()], dim=1)  # (n, 2)
    points = torch.cat([arc, circle]) + noise * torch.randn(2 * n_per_shape, 2, generator=g)
    labels = torch.cat([torch.zeros(n_per_shape), torch.ones(n_per_shape)]).long()
    return TensorData("toy2d", points, labels, num_classes=2, class_names=["sine", "circle"])
