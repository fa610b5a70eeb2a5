"""The report of a split: what was measured (scalars, histograms) and drawn (pictures), for sinks to write.

aelab/engine/measure.py fills it (`measure`); TensorBoard, metrics.json and the terminal table only write it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class PictureOptions:
    """How much a picture-showing sink wants drawn; computing pictures is skipped when no sink shows them."""

    num_images: int = 32  # reconstructions shown
    manifold_points: int = 2000  # codes in the manifold scatter
    grid_size: int = 15  # n x n decoded latent grid (2-D codes)
    num_samples: int = 64  # prior samples shown
    traversal: bool = False  # latent traversals too (the engine asks for them on data with known factors)
    traversal_dims: int = 10  # dimensions shown, by decreasing KL for VAE-type families
    traversal_steps: int = 10  # steps of each sweep


@dataclass
class Report:
    """One measurement of a split: scalars by name (no split prefix), histograms, and pictures."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)
    images: dict[str, Tensor] = field(default_factory=dict)  # (3, H, W) in [0, 1]
    figures: dict[str, Any] = field(default_factory=dict)  # matplotlib figures (scatter plots of vectors)
    # what the family says of its scalars ("min", "max", None: no better side); the rest go by their names
    directions: dict[str, str | None] = field(default_factory=dict)

    def prefixed(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}/{k}": v for k, v in self.scalars.items()}

    def prefixed_directions(self, *prefixes: str) -> dict[str, str | None]:
        return {f"{prefix}/{k}": v for prefix in prefixes for k, v in self.directions.items()}
