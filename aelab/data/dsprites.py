"""dSprites drawn offline: white shapes on black over the original 3 x 6 x 40 x 32 x 32 factor grid.

The original data set (Matthey et al. 2017) is a 2.6 GB download with no generator code. This module
draws the same grid with a vectorised rasteriser whose geometry was measured on the 320 real 64x64
frames of the data set's own dsprites.gif (github.com/deepmind/dsprites-dataset):

- position: the shape's centre runs over [0.25, 0.75] of the image (pixel 16..48 at 64 px), so no
  shape ever touches the border; posY grows downwards, posX to the right;
- scale 1: a square of side 19 px, an ellipse with semi-axes 12.75 x 7.25 px (long axis horizontal at
  orientation 0), a heart of two lobes (radius 5 px, centres 4.75 px either side and 4.3 px above the
  rotation centre) joined by tangents to a tip 8.75 px below it, 19.5 x 18 px; every size is multiplied
  by the scale factor (0.5 .. 1); these numbers were fitted to the GIF's frames by intersection over
  union (square 1.0, ellipse 0.99, heart 0.96 averaged over the six scales);
- orientation: counter-clockwise on screen; 40 values over [0, 2 pi] with both ends included, as in
  the original, so orientation 0 and 39 draw the same image;
- a pixel is on when its centre lies inside the shape (binary images, no anti-aliasing).

The full grid is cached as bit-packed uint8 rows (377 MB at 64 px) under $AELAB_DATA_DIR/dsprites.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from aelab.data.base import FactorSpec
from aelab.data.sources import TensorData
from aelab.errors import UserError
from aelab.files import atomic_path, cache_not_written, data_dir
from aelab.schema import OneOf, Range

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_COMBINATIONS = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZES = (32, 64)
GEOMETRY_VERSION = 1  # bump when the drawing changes: it keys the cache file

SCALES = torch.linspace(0.5, 1.0, 6, dtype=torch.float64)
ORIENTATIONS = torch.linspace(0.0, 2 * math.pi, 40, dtype=torch.float64)
POSITIONS = torch.linspace(0.0, 1.0, 32, dtype=torch.float64)
POSITION_RANGE = (0.25, 0.75)  # fraction of the image the shape's centre runs over

# Shape geometry in pixels of a 64 px image at scale 1, relative to the centre, v pointing down.
SQUARE_HALF_SIDE = 9.5
ELLIPSE_AXES = (12.75, 7.25)
HEART_LOBE_X, HEART_LOBE_Y, HEART_LOBE_RADIUS, HEART_TIP_Y = 4.75, -4.3, 5.0, 8.75
BOUNDING_RADIUS = 13.5  # no shape reaches further from its centre (square corner: 9.5 * sqrt 2)


def _heart_polygon() -> list[tuple[float, float]]:
    """Convex pentagon filling the heart below its lobes: lobe centres, the tangent points, the tip."""
    dx, dy = HEART_LOBE_X, HEART_TIP_Y - HEART_LOBE_Y  # from the tip to the right lobe's centre
    dist = math.hypot(dx, dy)
    # the outer tangent from the tip touches the lobe where the radius is perpendicular to it
    angle = math.atan2(dx, dy) + math.asin(HEART_LOBE_RADIUS / dist)  # from the upward vertical
    nx, ny = math.cos(angle), math.sin(angle)  # outward normal of the right tangent line
    tx, ty = HEART_LOBE_X + HEART_LOBE_RADIUS * nx, HEART_LOBE_Y + HEART_LOBE_RADIUS * ny
    return [(-HEART_LOBE_X, HEART_LOBE_Y), (HEART_LOBE_X, HEART_LOBE_Y), (tx, ty), (0.0, HEART_TIP_Y), (-tx, ty)]


HEART_POLYGON = _heart_polygon()


def _inside(shape: int, u: Tensor, v: Tensor) -> Tensor:
    """Whether points (u, v) of the shape's own frame (64 px units at scale 1) lie inside it."""
    if shape == 0:
        return (u.abs() <= SQUARE_HALF_SIDE) & (v.abs() <= SQUARE_HALF_SIDE)
    if shape == 1:
        a, b = ELLIPSE_AXES
        return (u / a).square() + (v / b).square() <= 1.0
    r2 = HEART_LOBE_RADIUS**2
    vl = (v - HEART_LOBE_Y).square()
    polygon = torch.ones_like(u, dtype=torch.bool)
    poly = HEART_POLYGON
    for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1]):  # clockwise on screen: inside is on the right
        polygon &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return polygon | ((u - HEART_LOBE_X).square() + vl <= r2) | ((u + HEART_LOBE_X).square() + vl <= r2)


def render(factors: Tensor, size: int = 64) -> Tensor:
    """Factor indices (N, 5) in FACTOR_NAMES order -> uint8 images (N, 1, size, size), 0 or 255."""
    factors = factors.long().cpu()
    n = factors.shape[0]
    out = torch.zeros(n, size * size, dtype=torch.uint8)
    for shape in range(len(SHAPES)):  # one shape at a time: each has its own inside test
        rows = (factors[:, 0] == shape).nonzero().squeeze(1)
        for first in range(0, len(rows), 8192):  # chunks keep the float temporaries near 25 MB
            chunk = rows[first : first + 8192]
            index, on = _draw(shape, factors[chunk], size)
            out[chunk] = torch.zeros(len(chunk), size * size, dtype=torch.uint8).scatter_(1, index, on)
    return out.view(n, 1, size, size)


def _draw(shape: int, f: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Flat pixel indices (n, W * W) of a window around each centre and their values (0 or 255)."""
    px = size / 64.0  # pixels per 64-px unit
    # Only a window around each centre can be on: test W x W pixels instead of size x size.
    window = min(size, int(math.ceil(2 * BOUNDING_RADIUS * px)) + 2)
    offsets = torch.arange(window)
    scale, theta = SCALES[f[:, 1]], ORIENTATIONS[f[:, 2]]
    low, high = POSITION_RANGE
    cx = size * (low + (high - low) * POSITIONS[f[:, 3]])  # centre, in pixel-edge coordinates
    cy = size * (low + (high - low) * POSITIONS[f[:, 4]])
    ox = (cx - window / 2).round().clamp(0, size - window).long()  # window origin
    oy = (cy - window / 2).round().clamp(0, size - window).long()
    dx = (ox.unsqueeze(1) + offsets + 0.5 - cx.unsqueeze(1)).float().unsqueeze(1)  # (n, 1, W): pixel centre - centre
    dy = (oy.unsqueeze(1) + offsets + 0.5 - cy.unsqueeze(1)).float().unsqueeze(2)  # (n, W, 1), pointing down
    # Undo the rotation (counter-clockwise on screen, i.e. with y pointing up) and the scale.
    c = (theta.cos() / (scale * px)).float().view(-1, 1, 1)
    s = (theta.sin() / (scale * px)).float().view(-1, 1, 1)
    on = _inside(shape, dx * c - dy * s, dx * s + dy * c)  # (n, W, W)
    index = (oy.view(-1, 1, 1) + offsets.view(1, -1, 1)) * size + ox.view(-1, 1, 1) + offsets.view(1, 1, -1)
    return index.view(len(f), -1), on.view(len(f), -1).to(torch.uint8).mul_(255)


def render_float(factors: Tensor, size: int = 64) -> Tensor:
    """Factor indices (N, 5) -> float images (N, 1, size, size) in [0, 1], as batches hold them."""
    return render(factors, size).float().div_(255.0)


def factor_grid() -> Tensor:
    """Every combination (737,280, 5), posY varying fastest, in the original data set's order."""
    axes = [torch.arange(k) for k in FACTOR_SIZES]
    return torch.cartesian_prod(*axes)


def cache_path(size: int) -> Path:
    root = data_dir()
    return root / "dsprites" / f"dsprites-{size}px-v{GEOMETRY_VERSION}.npy"


def build_grid(size: int, path: Path) -> np.ndarray:
    """Draw all 737,280 images once and store them bit-packed (N, size, size / 8) uint8; a cache that cannot be
    written (a full disk) is said once, and the grid is used from memory."""
    grid = factor_grid()
    packed = np.empty((NUM_COMBINATIONS, size, size // 8), dtype=np.uint8)
    for first in range(0, NUM_COMBINATIONS, 65536):
        images = render(grid[first : first + 65536], size).squeeze(1).numpy()  # (n, size, size)
        packed[first : first + 65536] = np.packbits(images > 0, axis=-1)
    try:
        with atomic_path(path, ".npy", what="dSprites cache") as tmp:  # parallel sweep jobs never read half a file
            np.save(tmp, packed)
    except OSError as exc:
        cache_not_written("dSprites cache", path, exc)
    return packed


def load_grid_rows(size: int, rows: Tensor | None) -> Tensor:
    """uint8 images (N, 1, size, size) of the given grid rows (all when None), building the cache if needed."""
    path = cache_path(size)
    packed = np.load(path, mmap_mode="r") if path.is_file() else build_grid(size, path)
    picked = packed if rows is None else packed[np.sort(rows.numpy())]
    images = np.unpackbits(picked, axis=-1)  # (N, size, size) of 0/1
    images *= 255  # in place: the full grid is 3 GB at 64 px
    images = torch.from_numpy(images).unsqueeze(1)
    if rows is None:
        return images
    back = torch.from_numpy(np.argsort(np.argsort(rows.numpy())))  # undo the sort done for the memmap read
    return images[back]


def load_dsprites(
    size: Annotated[int, OneOf(IMAGE_SIZES)] = 64,
    subsample: Annotated[int | None, Range(1, NUM_COMBINATIONS)] = None,
    seed: Annotated[int, Range(0, None)] = 0,
) -> TensorData:
    """The dSprites grid (or `subsample` combinations drawn without replacement, seeded); y = shape."""
    if size not in IMAGE_SIZES:
        raise UserError("data.size", f"got {size}", "one of: " + ", ".join(map(str, IMAGE_SIZES)))
    if subsample is not None and not 1 <= subsample <= NUM_COMBINATIONS:
        raise UserError("data.subsample", f"got {subsample}", f"an integer 1..{NUM_COMBINATIONS} or null")
    grid = factor_grid()
    rows = None
    notes = []
    if subsample is not None:
        rows = torch.randperm(NUM_COMBINATIONS, generator=torch.Generator().manual_seed(seed))[:subsample]
        grid = grid[rows]
    if rows is not None and not cache_path(size).is_file():
        x = render(grid, size)  # a subsample is quicker to draw than the whole grid; same pixels
    else:
        start = time.perf_counter()
        had_cache = cache_path(size).is_file()
        x = load_grid_rows(size, rows)
        if not had_cache:
            notes.append(f"drew the {NUM_COMBINATIONS:,}-image grid in {time.perf_counter() - start:.0f} s "
                         f"and cached it at {cache_path(size)}")
    # Chen et al.'s MIG leaves shape out (rtqichen/beta-tcvae, metric_helpers/mi_metric.py: factor_entropies
    # [6, 40, 32, 32])
    spec = FactorSpec(FACTOR_NAMES, FACTOR_SIZES, partial(render_float, size=size),
                      chen_mig_factors=("scale", "orientation", "posX", "posY"))
    name = "dsprites" if size == 64 else f"dsprites{size}"
    return TensorData(name, x, grid[:, 0].clone(), num_classes=len(SHAPES), class_names=list(SHAPES),
                      notes=notes, factors=grid, factor_spec=spec)
