"""dSprites drawn offline: the factor grid, the geometry against the original images, caching, factors in batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aelab.data import build_data
from aelab.data import dsprites
from aelab.errors import UserError
from aelab.schema import check_target

CPU = torch.device("cpu")

# Two real 64x64 dSprites images (from dsprites.gif in github.com/deepmind/dsprites-dataset), cropped to
# the shape's bounding box: scale 1, orientation 0, posX = posY = 0; (top row, left column) given.
REAL_HEART = (7, 6, """
...#####....#####...
..#######..#######..
.########..########.
.##################.
####################
####################
.##################.
.##################.
..################..
..################..
...##############...
....############....
.....##########.....
......########......
.......######.......
........####........
.........##.........
""")
REAL_ELLIPSE = (9, 3, """
.......############.......
.....################.....
...####################...
..######################..
.########################.
.########################.
##########################
##########################
.########################.
.########################.
..######################..
...####################...
.....################.....
.......############.......
""")


def real_image(top: int, left: int, art: str) -> np.ndarray:
    rows = [line for line in art.strip().splitlines()]
    image = np.zeros((64, 64), dtype=bool)
    image[top : top + len(rows), left : left + len(rows[0])] = np.array([[c == "#" for c in r] for r in rows])
    return image


def draw(*factors: tuple[int, int, int, int, int], size: int = 64) -> np.ndarray:
    return dsprites.render(torch.tensor(factors), size).squeeze(1).numpy() > 0  # (N, size, size) bool


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grid_has_every_combination_in_the_original_order() -> None:
    grid = dsprites.factor_grid()
    assert grid.shape == (737_280, 5) and dsprites.NUM_COMBINATIONS == 737_280
    assert grid[1].tolist() == [0, 0, 0, 0, 1] and grid[32].tolist() == [0, 0, 0, 1, 0]  # posY varies fastest
    assert grid[-1].tolist() == [2, 5, 39, 31, 31]
    assert len(torch.unique(grid @ torch.tensor([6 * 40 * 32 * 32, 40 * 32 * 32, 32 * 32, 32, 1]))) == 737_280


def test_geometry_matches_the_original_images() -> None:
    square, ellipse, heart = draw((0, 5, 0, 0, 0), (1, 5, 0, 0, 0), (2, 5, 0, 0, 0))
    rows, cols = np.nonzero(square)  # the original: a 20 x 20 pixel block at rows and columns 6..25
    assert square.sum() == 400 and (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 25, 6, 25)
    assert iou(ellipse, real_image(*REAL_ELLIPSE)) > 0.98
    assert iou(heart, real_image(*REAL_HEART)) > 0.92
    # scale 0.5 halves every side: the original's smallest square is 10 x 10
    assert draw((0, 0, 0, 0, 0))[0].sum() == 100


def test_positions_orientations_and_symmetries() -> None:
    left, right, bottom = draw((0, 5, 0, 0, 0), (0, 5, 0, 31, 0), (0, 5, 0, 0, 31))
    assert np.nonzero(left)[1].mean() == 15.5 and np.nonzero(right)[1].mean() == 47.5  # posX moves columns
    assert np.nonzero(bottom)[0].mean() == 47.5  # posY moves rows down
    # no shape ever touches the border, at any scale, orientation or position
    rng = torch.Generator().manual_seed(0)
    sample = dsprites.factor_grid()[torch.randint(737_280, (3000,), generator=rng)]
    images = dsprites.render(sample).squeeze(1)
    assert images[:, [0, -1], :].sum() == 0 and images[:, :, [0, -1]].sum() == 0
    assert (images.flatten(1).sum(1) > 0).all()
    # orientation 0 and 39 are both 0 and 2 pi: the same image, as in the original
    for shape in range(3):
        first, last = draw((shape, 3, 0, 10, 20), (shape, 3, 39, 10, 20))
        assert (first == last).all()
    # the heart turns counter-clockwise on screen: a quarter turn (10 steps of 2 pi / 39) puts its lobes left
    quarter = draw((2, 5, 10, 15, 15))[0]
    assert np.nonzero(quarter)[1].mean() < 31.5 - 1  # lobes, the heavy end, now on the left
    # a square looks alike a quarter turn later; a heart does not
    sq0, sq10, h0, h10 = draw((0, 5, 0, 15, 15), (0, 5, 10, 15, 15), (2, 5, 0, 15, 15), (2, 5, 10, 15, 15))
    assert iou(sq0, sq10) > 0.85 and iou(h0, h10) < 0.7


def test_size_32_is_the_same_geometry_at_half_resolution() -> None:
    small, big = draw((1, 4, 7, 9, 20), size=32)[0], draw((1, 4, 7, 9, 20))[0]
    pooled = torch.from_numpy(big).float().view(1, 1, 64, 64)
    pooled = torch.nn.functional.avg_pool2d(pooled, 2).squeeze().numpy() >= 0.5
    assert small.shape == (32, 32) and iou(small, pooled) > 0.8
    assert abs(np.nonzero(small)[1].mean() * 2 + 0.5 - np.nonzero(big)[1].mean()) < 1.0


def test_data_module_carries_factors_and_renders(compose_cfg) -> None:
    cfg = compose_cfg(["data=dsprites", "data.size=32", "data.subsample=2000"])
    data = build_data(cfg.data, CPU)
    assert data.name == "dsprites32" and data.shape == (1, 32, 32) and data.num_classes == 3
    assert data.factors is not None and data.factors.names == dsprites.FACTOR_NAMES
    assert data.factors.sizes == (3, 6, 40, 32, 32)
    assert len(data.train) + len(data.val) + len(data.test) == 2000
    for split in (data.train, data.val, data.test):
        batch = next(split.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1)))
        assert batch.factors is not None and batch.factors.shape == (len(batch), 5)
        assert torch.equal(batch.y, batch.factors[:, 0])  # y is the shape
        assert torch.equal(data.render(batch.factors), batch.x)  # each example is the image of its factors
    assert data.train.take([3, 5]).factors.shape == (2, 5) and data.train.head(4).factors.shape == (4, 5)
    # the subsample is seeded: the same config draws the same combinations
    again = build_data(cfg.data, CPU)
    assert torch.equal(again.train.factors, data.train.factors)
    other = build_data(compose_cfg(["data=dsprites", "data.size=32", "data.subsample=2000", "data.seed=1"]).data, CPU)
    assert not torch.equal(other.train.factors, data.train.factors)


def test_other_data_has_no_factors(compose_cfg) -> None:
    data = build_data(compose_cfg(["data=synthetic"]).data, CPU)
    assert data.factors is None and next(data.train.batches(8)).factors is None
    with pytest.raises(ValueError, match="no known factors"):
        data.render(torch.zeros(1, 5, dtype=torch.long))


def test_bad_settings_are_user_errors(compose_cfg) -> None:
    for override, key in [("data.size=48", "size"), ("data.subsample=0", "subsample")]:
        cfg = compose_cfg(["data=dsprites", override])
        with pytest.raises(UserError, match=key):
            check_target(cfg.data.source, "data.source")
        with pytest.raises(UserError, match=key):
            dsprites.load_dsprites(**{k: v for k, v in cfg.data.source.items() if k != "_target_"})


@pytest.mark.slow
def test_cached_grid_is_built_once_and_matches_direct_drawing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path))
    first = dsprites.load_dsprites(size=32)
    path = dsprites.cache_path(32)
    assert path.is_file() and path.stat().st_size < 737_280 * 32 * 4 + 1024  # bit-packed: 4 bytes a row
    assert first.train_x.shape == (737_280, 1, 32, 32) and first.notes  # the build is reported
    rows = torch.tensor([0, 123_457, 737_279, 500_000])
    assert torch.equal(first.train_x[rows], dsprites.render(dsprites.factor_grid()[rows], 32))
    # a subsample read from the cache equals the same subsample drawn directly
    cached = dsprites.load_dsprites(size=32, subsample=3000, seed=4)
    path.unlink()
    direct = dsprites.load_dsprites(size=32, subsample=3000, seed=4)
    assert not cached.notes and torch.equal(cached.factors, direct.factors)
    assert torch.equal(cached.train_x, direct.train_x)
