"""Dataset registry (conf/data/*.yaml) -> train / val / test splits on the training device."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from aelab.data.base import Batch, DataModule, LoaderSplit, Split, TensorSplit
from aelab.data.sources import StreamData, TensorData
from aelab.instantiate import build
from aelab.errors import UserError

__all__ = ["Batch", "DataModule", "Split", "build_data"]


def _fractions(n: int, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Cut a seeded permutation of range(n) into the given fractions; the rest comes first."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [int(round(f * n)) for f in fractions]
    rest = n - sum(sizes)
    if rest < 1 or any(s < 1 for s in sizes):
        raise UserError("data", f"only {n} examples: too few for a train/val/test split")
    return list(torch.split(order, [rest, *sizes]))


def fit_standardization(x: torch.Tensor, columns: list[str] | None) -> dict[str, list]:
    """Per-column mean and std of (N, D) training rows, as plain lists (they travel in the checkpoint)."""
    x = x.double()
    return {"columns": list(columns) if columns is not None else [str(i) for i in range(x.shape[1])],
            "mean": x.mean(0).tolist(), "std": x.std(0).clamp_min(1e-12).tolist()}


def standardize(x: torch.Tensor, stats: dict[str, list]) -> torch.Tensor:  # (N, D) -> (N, D) float32
    """Scale rows with stored training statistics."""
    mean = torch.tensor(stats["mean"], dtype=torch.float64)
    std = torch.tensor(stats["std"], dtype=torch.float64)
    return ((x - mean) / std).float()


def _tensor_module(src: TensorData, val_fraction: float, test_fraction: float, seed: int,
                   device: torch.device, standardization: dict[str, list] | None = None) -> DataModule:
    if src.test_x is None:
        train_idx, val_idx, test_idx = _fractions(len(src.train_x), [val_fraction, test_fraction], seed)
        test = (src.train_x[test_idx], None if src.train_y is None else src.train_y[test_idx])
        test_factors = None if src.factors is None else src.factors[test_idx]
    else:
        train_idx, val_idx = _fractions(len(src.train_x), [val_fraction], seed)
        test = (src.test_x, src.test_y)
        test_factors = None  # factors are only known for data whose test split is carved from train

    x, stats = src.train_x, None
    if src.standardize:  # statistics of the training split only (or a trained run's), so val/test stay unseen
        stats = standardization or fit_standardization(x[train_idx], src.columns)
        x = standardize(x, stats)
        test = (standardize(test[0], stats), test[1])

    def part(idx: torch.Tensor) -> TensorSplit:
        return TensorSplit(x[idx], None if src.train_y is None else src.train_y[idx], device,
                           None if src.factors is None else src.factors[idx])

    return DataModule(
        src.name, tuple(src.train_x.shape[1:]), src.num_classes,  # type: ignore[arg-type]
        part(train_idx), part(val_idx), TensorSplit(*test, device, test_factors),
        class_names=src.class_names, notes=list(src.notes), factors=src.factor_spec, standardization=stats,
    )


def _stream_module(src: StreamData, val_fraction: float, test_fraction: float, seed: int,
                   device: torch.device, num_workers: int) -> DataModule:
    parts = _fractions(len(src.dataset), [val_fraction, test_fraction], seed)  # type: ignore[arg-type]
    labelled = src.num_classes is not None
    train, val, test = (
        LoaderSplit(torch.utils.data.Subset(src.dataset, idx.tolist()), device, labelled, num_workers)
        for idx in parts
    )
    return DataModule(src.name, src.shape, src.num_classes, train, val, test,
                      class_names=src.class_names, notes=list(src.notes))


def build_data(cfg: DictConfig, device: torch.device, standardization: dict[str, list] | None = None) -> DataModule:
    """Instantiate cfg.source and split it; the split is seeded by cfg.split_seed, not the run seed.

    standardization: a trained run's stored table statistics, used instead of fitting new ones.
    """
    src = build(cfg.source, "data.source")
    val_f, test_f, seed = float(cfg.val_fraction), float(cfg.test_fraction), int(cfg.split_seed)
    if isinstance(src, TensorData):
        return _tensor_module(src, val_f, test_f, seed, device, standardization)
    if isinstance(src, StreamData):
        return _stream_module(src, val_f, test_f, seed, device, int(cfg.get("num_workers", 0)))
    raise TypeError(f"data source {cfg.source._target_} returned {type(src).__name__}")
