"""Data registry: every dataset config loads offline, splits are fixed, the fast path batches correctly."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from aelab.data import build_data
from aelab.data.base import TensorSplit
from aelab.data.idx import DEBIAN_FASHION_DIR, read_idx
from aelab.errors import UserError
from conftest import REPO

CPU = torch.device("cpu")


def data_cfg(name: str, **source):
    cfg = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    for key, value in source.items():
        cfg.source[key] = value
    return cfg


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def fake_idx_root(root: Path, folder: str, n_train: int = 120, n_test: int = 30) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train))
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))


@pytest.mark.parametrize("name, shape, sizes", [
    ("mnist5k", (1, 28, 28), (4000, 500, 500)),
    ("digits", (1, 8, 8), None),
    ("synthetic", (1, 16, 16), (768, 128, 128)),
])
def test_embedded_datasets(name: str, shape, sizes) -> None:
    data = build_data(data_cfg(name), CPU)
    assert data.name == name and tuple(data.shape) == shape and data.num_classes is not None
    assert data.train.x.dtype == torch.uint8  # held compactly; converted per batch
    if sizes:
        assert (len(data.train), len(data.val), len(data.test)) == sizes
    batch = data.val.head(10)
    assert batch.x.dtype == torch.float32 and 0 <= batch.x.min() and batch.x.max() <= 1
    assert batch.y is not None and batch.y.max() < data.num_classes
    assert len(set(data.train.y.tolist())) == data.num_classes


def test_mnist_from_cache_and_offline_fallback(tmp_path) -> None:
    fake_idx_root(tmp_path, "MNIST")
    data = build_data(data_cfg("mnist", root=str(tmp_path)), CPU)
    assert data.name == "mnist" and len(data.test) == 30 and len(data.train) + len(data.val) == 120

    fallback = build_data(data_cfg("mnist", root=str(tmp_path / "empty"), download=False), CPU)
    assert fallback.name == "mnist5k" and "mnist5k" in fallback.notes[0]
    with pytest.raises(UserError, match="data"):
        build_data(data_cfg("mnist", root=str(tmp_path / "empty"), download=False, fallback=None), CPU)


def test_fashion_mnist_torchvision_layout(tmp_path) -> None:
    fake_idx_root(tmp_path, "FashionMNIST")
    data = build_data(data_cfg("fashion_mnist", root=str(tmp_path)), CPU)
    assert data.name == "fashion_mnist" and data.class_names[0] == "T-shirt/top" and len(data.test) == 30


@pytest.mark.skipif(not DEBIAN_FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(tmp_path) -> None:
    data = build_data(data_cfg("fashion_mnist", root=str(tmp_path), download=False), CPU)
    assert (len(data.train) + len(data.val), len(data.test)) == (60000, 10000) and len(data.val) == 5000


def test_idx_reader_rejects_truncated_files(tmp_path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28)))
    assert read_idx(path).shape == (4, 28, 28)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_folder_with_and_without_classes(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "labelled" / cls).mkdir(parents=True)
        for i in range(12):
            size = (20, 24) if i % 2 else (30, 30)  # mixed sizes are resized on read
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "labelled" / cls / f"{i}.png")
    data = build_data(data_cfg("folder", path=str(tmp_path / "labelled"), size=16), CPU)
    assert data.class_names == ["cats", "dogs"] and tuple(data.shape) == (1, 16, 16)
    batches = list(data.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(b) for b in batches) == len(data.train) and batches[0].x.shape[1:] == (1, 16, 16)

    (tmp_path / "flat").mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    flat = build_data(data_cfg("folder", path=str(tmp_path / "flat"), size=8, channels=3), CPU)
    assert flat.num_classes is None and flat.train.head(2).y is None and tuple(flat.shape) == (3, 8, 8)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in"):
        build_data(data_cfg("folder", path=str(tmp_path / "empty")), CPU)

    (tmp_path / "flat" / "broken.png").write_text("not an image")
    with pytest.raises(UserError, match="broken.png"):  # cached: found while the cache is built, before any batch
        build_data(data_cfg("folder", path=str(tmp_path / "flat"), size=8), CPU)
    broken = build_data(data_cfg("folder", path=str(tmp_path / "flat"), size=8, cache=False), CPU)  # streamed
    with pytest.raises(UserError, match="broken.png"):
        for split in (broken.train, broken.val, broken.test):
            list(split.batches(4))


def test_tensor_split_visits_every_example_once_per_epoch() -> None:
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    split = TensorSplit(x, torch.arange(10), CPU)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([b.y for b in split.batches(3, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    batch = next(split.batches(4))
    assert torch.equal(batch.x.view(-1) * 255, batch.y.float())  # images stay paired with labels
