"""Image folders decoded once into a cache and trained from memory; streamed when asked to or too big."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aelab.data import build_data, image_cache
from aelab.data.base import LoaderSplit, TensorSplit
from aelab.data.folder import ImageFiles, load_folder
from aelab.data.sources import StreamData, TensorData
from aelab.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test sees only its own cache files (conftest's data dir is shared by the whole session)."""
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "data-cache"))
    return tmp_path / "data-cache" / "folders"


def smooth_image(rng: np.random.Generator, shape: tuple[int, int], channels: int) -> Image.Image:
    """Upsampled noise: content that survives a resize (uniform noise would average to grey)."""
    coarse = rng.integers(0, 256, (max(2, shape[0] // 4), max(2, shape[1] // 4), channels), dtype=np.uint8)
    img = Image.fromarray(coarse[:, :, 0] if channels == 1 else coarse)
    return img.resize((shape[1], shape[0]), Image.Resampling.BICUBIC)


def image_folder(root: Path, per_class: int, classes: tuple[str, ...] = ("cats", "dogs"), channels: int = 3,
                 suffix: str = ".png", seed: int = 0) -> Path:
    """A folder with one subfolder per class of small images of mixed sizes (each resized on read)."""
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            shape = (20, 24) if i % 2 else (26, 26)
            smooth_image(rng, shape, channels).save(root / cls / f"{i}{suffix}")
    return root


def folder_cfg(compose_cfg, path: Path, *overrides: str):
    return compose_cfg(["data=folder", f"data.source.path={path}", "device=cpu", "logger=none", *overrides])


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npy")) if cache.is_dir() else []


def streamed_x(split: LoaderSplit) -> torch.Tensor:  # (N, C, H, W) float, in the split's order
    return torch.cat([b.x for b in split.batches(7)])


def test_cache_is_built_once_and_reused(compose_cfg, tmp_path, _own_cache, monkeypatch) -> None:
    cfg = folder_cfg(compose_cfg, image_folder(tmp_path / "images", 12), "data.source.size=8")
    first = build_data(cfg.data, CPU)
    assert isinstance(first.train, TensorSplit) and first.class_names == ["cats", "dogs"]
    assert any("decoded 24 images" in note for note in first.notes)
    [cache] = cache_files(_own_cache)
    stamp = cache.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was built again")

    monkeypatch.setattr(image_cache, "build_cache", no_build)
    monkeypatch.setattr(ImageFiles, "pixels", no_build)  # nor is any image decoded
    again = build_data(cfg.data, CPU)
    assert cache_files(_own_cache) == [cache] and cache.stat().st_mtime_ns == stamp and not again.notes
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.train.y, first.train.y)


def test_cache_is_rebuilt_when_a_file_or_the_resize_changes(tmp_path, _own_cache) -> None:
    folder = image_folder(tmp_path / "images", 6)
    before = load_folder(str(folder), size=8, channels=3)
    assert isinstance(before, TensorData)
    [old] = cache_files(_own_cache)

    changed = folder / "dogs" / "3.png"
    Image.fromarray(np.full((20, 24, 3), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # coarse clocks
    after = load_folder(str(folder), size=8, channels=3)
    [new] = cache_files(_own_cache)
    assert new != old  # the stale version is gone
    position = sorted(folder.rglob("*.png")).index(changed)
    assert (after.train_x[position] == 7).all() and not torch.equal(before.train_x[position], after.train_x[position])
    others = [i for i in range(len(after.train_x)) if i != position]
    assert torch.equal(before.train_x[others], after.train_x[others])

    smaller = load_folder(str(folder), size=6, channels=3)
    grey = load_folder(str(folder), size=8, channels=1)
    assert smaller.train_x.shape[1:] == (3, 6, 6) and grey.train_x.shape[1:] == (1, 8, 8)
    assert len(cache_files(_own_cache)) == 3  # one per resize setting, each valid
    assert grey.notes and smaller.notes  # both were decoded, not read from the 8 px RGB cache


def test_cached_and_streamed_pixels_are_identical(compose_cfg, tmp_path) -> None:
    folder = image_folder(tmp_path / "images", 10, suffix=".jpg")
    for channels in (1, 3):
        sizes = ["data.source.size=12", f"data.source.channels={channels}"]
        cached = build_data(folder_cfg(compose_cfg, folder, *sizes).data, CPU)
        streamed = build_data(folder_cfg(compose_cfg, folder, *sizes, "data.cache=false").data, CPU)
        for name in ("train", "val", "test"):
            a, b = getattr(cached, name), getattr(streamed, name)
            assert isinstance(a, TensorSplit) and isinstance(b, LoaderSplit)
            assert torch.equal(a.head(len(a)).x, streamed_x(b))  # same split, same order, same pixels
            assert torch.equal(a.head(len(a)).y, torch.cat([batch.y for batch in b.batches(7)]))


def test_corrupt_image_found_by_a_worker_is_named_and_leaves_no_cache(tmp_path, _own_cache, monkeypatch) -> None:
    folder = image_folder(tmp_path / "images", 8)
    broken = folder / "dogs" / "5.png"
    broken.write_bytes(b"not an image")
    monkeypatch.setattr(image_cache, "worker_count", lambda n: 2)  # two processes even for 16 files
    with pytest.raises(UserError, match=f"data.source.path: cannot read image {broken}"):
        load_folder(str(folder), size=8, channels=3)
    assert not list(_own_cache.iterdir())  # neither a cache nor a temporary file


def test_an_interrupted_or_truncated_cache_is_never_trusted(tmp_path, _own_cache, monkeypatch) -> None:
    folder = image_folder(tmp_path / "images", 6)
    read = ImageFiles.pixels
    calls = []

    def interrupted(self, i: int) -> np.ndarray:
        calls.append(i)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return read(self, i)

    monkeypatch.setattr(ImageFiles, "pixels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_folder(str(folder), size=8)
    assert not list(_own_cache.iterdir())
    monkeypatch.setattr(ImageFiles, "pixels", read)

    whole = load_folder(str(folder), size=8).train_x.clone()  # a copy: the cached array maps the file
    [cache] = cache_files(_own_cache)
    cache.write_bytes(cache.read_bytes()[:-50])  # a file cut short (a full disk, a copy gone wrong)
    again = load_folder(str(folder), size=8)
    assert again.notes and torch.equal(again.train_x, whole)  # decoded again, not read half


def test_cache_false_or_too_big_streams(compose_cfg, tmp_path, _own_cache, monkeypatch, caplog) -> None:
    folder = image_folder(tmp_path / "images", 4)
    off = build_data(folder_cfg(compose_cfg, folder, "data.cache=false").data, CPU)
    assert isinstance(off.train, LoaderSplit) and not cache_files(_own_cache)

    monkeypatch.setattr(image_cache, "available_memory", lambda: 2_000)
    with caplog.at_level(logging.WARNING):
        big = load_folder(str(folder), size=8, channels=3)  # 8 images x 192 bytes > half of 2,000 bytes
    assert isinstance(big, StreamData) and not cache_files(_own_cache)
    assert any("of pixels exceeds the in-memory limit" in n and "streaming from disk" in n for n in big.notes)
    assert any("streaming from disk" in r.getMessage() for r in caplog.records)


def test_rgb_conv_trains_from_the_cache(compose_cfg, tmp_path) -> None:
    from aelab.engine.build import build_trainer
    from aelab.engine.measure import mean_terms

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    ramp = np.linspace(0.2, 1.0, 48)[None, :, None]  # (1, W, 1): darker than mid-grey, so there is a mean to learn
    for i in range(32):
        colour = rng.uniform(0, 120, (1, 1, 3))
        Image.fromarray(np.broadcast_to(colour * ramp, (40, 48, 3)).astype(np.uint8)).save(folder / f"{i}.jpg")
    cfg = folder_cfg(compose_cfg, folder, "data.source.channels=3", "data.source.size=64", "model=ae", "arch=conv",
                     "arch.channels=[8,16]", "latent_dim=8", "batch_size=8", "epochs=3", "lr=3e-3", "seed=0")
    torch.manual_seed(0)
    trainer, data = build_trainer(cfg, CPU, tmp_path / "run")
    assert isinstance(data.train, TensorSplit) and tuple(data.shape) == (3, 64, 64)
    before = float(sum(mean_terms(trainer.model, data.train, 64).values()))
    trainer.fit()
    after = float(sum(mean_terms(trainer.model, data.train, 64).values()))
    assert math.isfinite(after) and after < before
