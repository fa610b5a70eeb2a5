"""Data containers: in-memory tensor splits and streaming loader splits behind one interface."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


@dataclass(slots=True)
class Batch:
    x: Tensor  # (B, C, H, W) float images in [0, 1], or (B, D) float vectors
    y: Tensor | None = None  # (B,) int64 class labels, None for unlabeled data
    index: Tensor | None = None  # (B,) int64 positions in the split: a fixed identity per example
    factors: Tensor | None = None  # (B, F) int64 ground-truth factor indices, None for data without known factors

    def __len__(self) -> int:
        return self.x.shape[0]


def to_float(x: Tensor) -> Tensor:
    """uint8 pixels -> float in [0, 1]; float data passes through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class Split(Protocol):
    has_labels: bool

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, start: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """Batches in order (or one shuffled permutation), from batch number `start` (resuming mid-epoch).

        shard=(rank, world): this process's share of every batch (distributed training: each
        rank draws the same permutation and keeps every world-th example of each batch).
        """
        ...

    def head(self, n: int) -> Batch: ...

    def take(self, indices: list[int]) -> Batch: ...


class TensorSplit:
    """A split held as one tensor on the training device, batched by indexing a permutation."""

    def __init__(self, x: Tensor, y: Tensor | None, device: torch.device, factors: Tensor | None = None) -> None:
        self.x = x.to(device)  # (N, C, H, W) uint8 (images) or (N, D) float (vectors)
        self.y = None if y is None else y.to(device=device, dtype=torch.long)  # (N,)
        self.factors = None if factors is None else factors.to(device=device, dtype=torch.long)  # (N, F)
        self.device = device
        self.has_labels = y is not None

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, start: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        n = len(self)
        rank, world = shard
        # The permutation is drawn on the CPU generator (portable, checkpointable
        # state) and moved once per epoch; indexing happens on the device.
        order = torch.randperm(n, generator=generator).to(self.device) if shuffle else None
        for first in range(start * batch_size, n, batch_size):
            if order is None and world == 1:
                sl = slice(first, first + batch_size)
                index = torch.arange(first, min(first + batch_size, n), device=self.device)
                yield Batch(to_float(self.x[sl]), None if self.y is None else self.y[sl], index,
                            None if self.factors is None else self.factors[sl])
            else:
                idx = (order[first : first + batch_size] if order is not None
                       else torch.arange(first, min(first + batch_size, n), device=self.device))[rank::world]
                yield self._gather(idx)

    def head(self, n: int) -> Batch:
        return Batch(to_float(self.x[:n]), None if self.y is None else self.y[:n],
                     torch.arange(min(n, len(self)), device=self.device),
                     None if self.factors is None else self.factors[:n])

    def take(self, indices: list[int]) -> Batch:
        return self._gather(torch.as_tensor(indices, dtype=torch.long, device=self.device))

    def _gather(self, idx: Tensor) -> Batch:
        # index_select, not x[idx]: advanced indexing takes a general path, 10x slower on CPU for
        # a 128-image uint8 batch (34 us vs 3 us), which is 3% of an MLP training step
        return Batch(to_float(self.x.index_select(0, idx)), None if self.y is None else self.y.index_select(0, idx), idx,
                     None if self.factors is None else self.factors.index_select(0, idx))


class LoaderSplit:
    """A split streamed from a map-style dataset through a DataLoader (data that need not fit in memory)."""

    def __init__(
        self, dataset: torch.utils.data.Dataset, device: torch.device, has_labels: bool, num_workers: int = 0
    ) -> None:
        self.dataset, self.device, self.has_labels, self.num_workers = dataset, device, has_labels, num_workers

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _to_batch(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        x = to_float(x.to(self.device, non_blocking=True))
        return Batch(x, y.to(self.device) if self.has_labels else None, index.to(self.device))

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, start: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        rank, world = shard
        # Same permutation and sharding rule as TensorSplit, so a resumed epoch replays the same order.
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        chunks = [order[i : i + batch_size][rank::world] for i in range(start * batch_size, len(self), batch_size)]
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
        )
        for chunk, (x, y) in zip(chunks, loader):
            yield self._to_batch(x, y, chunk)

    def head(self, n: int) -> Batch:
        return self.take(list(range(min(n, len(self)))))

    def take(self, indices: list[int]) -> Batch:
        items = [self.dataset[i] for i in indices]
        return self._to_batch(torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items]),
                              torch.as_tensor(indices))


@dataclass(frozen=True)
class FactorSpec:
    """Known factors of variation: their names, how many values each takes, and a renderer for chosen values."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    render: Callable[[Tensor], Tensor]  # factor indices (N, F) int64 -> float images (N, C, H, W) in [0, 1], CPU
    chen_mig_factors: tuple[str, ...] | None = None  # those Chen et al.'s MIG averages over, on a data set of theirs


@dataclass
class DataModule:
    """The train / validation / test splits of one dataset, with what was really loaded."""

    name: str  # the dataset really used (after any fallback)
    shape: tuple[int, ...]  # one example: (C, H, W) images or (D,) vectors
    num_classes: int | None
    train: Split
    val: Split
    test: Split
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why a fallback happened
    factors: FactorSpec | None = None  # data with known factors (dsprites); splits then carry Batch.factors
    # standardised tables: {columns, mean, std} of the training split, kept in the checkpoint so data given to a
    # trained run later is scaled as the training data was (never refitted on the new data)
    standardization: dict[str, list] | None = None

    def render(self, factor_indices: Tensor) -> Tensor:
        """Images (N, C, H, W) for chosen factor indices (N, F); only for data with known factors."""
        if self.factors is None:
            raise ValueError(f"data '{self.name}' has no known factors to render")
        return self.factors.render(factor_indices)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name, "shape": list(self.shape), "num_classes": self.num_classes,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "notes": self.notes,
            **({"standardization": self.standardization} if self.standardization is not None else {}),
        }
