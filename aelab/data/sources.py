"""What a data source hands to the builder: whole tensors, or an indexable stream."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from aelab.data.base import FactorSpec


@dataclass
class TensorData:
    """A dataset small enough to hold in memory; test=None means carve one from train."""

    name: str
    train_x: Tensor  # (N, C, H, W) uint8 images, or (N, D) float vectors
    train_y: Tensor | None  # (N,)
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    standardize: bool = False  # scale each column to zero mean, unit variance with training-split statistics
    columns: list[str] | None = None  # a table's feature column names: the schema new data must match
    factors: Tensor | None = None  # (N, F) int64 ground-truth factor indices of train_x (test carved from train)
    factor_spec: FactorSpec | None = None


@dataclass
class StreamData:
    """A dataset read example by example; dataset[i] -> (uint8 (C, H, W) tensor, int label)."""

    name: str
    dataset: torch.utils.data.Dataset
    shape: tuple[int, int, int]
    num_classes: int | None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
