"""Scatter plots drawn straight into an image with Pillow: the latent manifold of every epoch.

A training run draws the manifold at each epoch's end. Through matplotlib that cost 0.53 CPU-s at the first epoch
(importing pyplot, loading fonts, building the figure) and 0.23 more for TensorBoard to render it, then about 0.2 at
each epoch after (1 thread on a busy 2-core machine). Pillow, which the image grids already use, draws the same
points, frame, ticks and legend in under 30 ms (27 ms measured on that machine) and imports nothing new.
`Plot` holds what is drawn (layers of points, their colours, the labels) so that tests read it without pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

RGB = tuple[int, int, int]

# matplotlib's "tab10" palette (Tableau's ten): class c is drawn in TAB10[c % 10], as the matplotlib figure did
TAB10: tuple[RGB, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
BLUE = TAB10[0]
WIDTH, HEIGHT = 550, 500
MARGIN = {"left": 64, "right": 14, "top": 30, "bottom": 46}


@dataclass
class Layer:
    """Points (N, 2) drawn in order; `colors` one per point (N, 3) uint8, or one for all."""

    name: str
    points: Tensor
    colors: Tensor | RGB
    alpha: float
    radius: float = 1.5


@dataclass
class Plot:
    layers: list[Layer]
    title: str
    xlabel: str
    ylabel: str
    legend: list[tuple[str, RGB]] = field(default_factory=list)


def class_color(label: int) -> RGB:
    return TAB10[label % len(TAB10)]


def class_colors(labels: Tensor) -> Tensor:  # (N,) int -> (N, 3) uint8, class_color of each
    palette = torch.tensor(TAB10, dtype=torch.uint8)
    return palette[labels.long().cpu() % len(TAB10)]


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values inside [low, high], about `target` of them, at steps of 1, 2, 2.5 or 5 x 10^k."""
    raw = (high - low) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = [(first + i) * step for i in range(int((high - low) / step + 1e-9) + 2)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks if low - 1e-9 * step <= t <= high + 1e-9 * step]


def tick_label(value: float) -> str:
    return f"{value:.6g}"


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _limits(layers: list[Layer]) -> tuple[float, float, float, float]:
    """The data box of every finite point, 5% wider on each side (a flat box gets a unit width)."""
    pts = torch.cat([layer.points.float() for layer in layers]) if layers else torch.zeros(0, 2)
    pts = pts[torch.isfinite(pts).all(1)]
    if not len(pts):
        return -1.0, 1.0, -1.0, 1.0
    lo, hi = pts.min(0).values, pts.max(0).values
    span = (hi - lo).clamp_min(0)
    pad = torch.where(span > 0, 0.05 * span, torch.ones_like(span))
    lo, hi = lo - pad, hi + pad
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def draw(plot: Plot, width: int = WIDTH, height: int = HEIGHT) -> Tensor:
    """The plot as a (3, H, W) image in [0, 1]: layers in order (later ones on top, each point alpha-blended),
    a frame with ticks, title, axis labels and the legend in the upper right corner."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image, "RGBA")  # RGBA fills blend into the RGB canvas, point by point
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = width - MARGIN["right"], height - MARGIN["bottom"]
    x0, x1, y0, y1 = _limits(plot.layers)

    def sx(x):  # data x -> pixel column (a float or an array)
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y):  # data y -> pixel row: y grows upwards on the picture, rows downwards
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    def to_pixels(points: Tensor) -> np.ndarray:  # (N, 2) data -> (N, 2) pixels
        p = points.float().cpu().numpy()
        return np.stack([sx(p[:, 0]), sy(p[:, 1])], 1)

    for layer in plot.layers:
        xy = to_pixels(layer.points)
        keep = np.isfinite(xy).all(1)
        a = int(round(255 * layer.alpha))
        r = layer.radius
        if isinstance(layer.colors, Tensor):
            colors = [tuple(c) + (a,) for c in layer.colors.tolist()]
        else:
            colors = [tuple(layer.colors) + (a,)] * len(xy)
        for (px, py), color, ok in zip(xy.tolist(), colors, keep.tolist()):
            if ok:
                pen.ellipse((px - r, py - r, px + r, py + r), fill=color)

    small, large = _font(12), _font(14)
    grey = (90, 90, 90)
    pen.rectangle((left, top, right, bottom), outline=(60, 60, 60))
    for value in nice_ticks(x0, x1):
        px = sx(value)
        pen.line((px, bottom, px, bottom + 4), fill=(60, 60, 60))
        pen.text((px, bottom + 6), tick_label(value), fill=grey, font=small, anchor="mt")
    for value in nice_ticks(y0, y1):
        py = sy(value)
        pen.line((left - 4, py, left, py), fill=(60, 60, 60))
        pen.text((left - 6, py), tick_label(value), fill=grey, font=small, anchor="rm")
    pen.text(((left + right) / 2, 8), plot.title, fill=(0, 0, 0), font=large, anchor="mt")
    pen.text(((left + right) / 2, height - 6), plot.xlabel, fill=(0, 0, 0), font=small, anchor="mb")
    label = Image.new("RGB", (int(pen.textlength(plot.ylabel, font=small)) + 4, 16), "white")
    ImageDraw.Draw(label).text((2, 8), plot.ylabel, fill=(0, 0, 0), font=small, anchor="lm")
    label = label.rotate(90, expand=True)
    image.paste(label, (4, int((top + bottom - label.height) / 2)))
    if plot.legend:
        rows = 15
        entries = list(plot.legend)
        fit = max(2, (bottom - top - 16) // rows)  # a legend of many classes ends in "+N more" inside the frame
        if len(entries) > fit:
            entries = entries[: fit - 1] + [(f"+{len(entries) - fit + 1} more", (255, 255, 255))]
        text_width = max(pen.textlength(name, font=small) for name, _ in entries)
        box = (right - 24 - text_width, top + 6, right - 6, top + 10 + rows * len(entries))
        pen.rectangle(box, fill=(255, 255, 255, 190), outline=(200, 200, 200))
        for i, (name, color) in enumerate(entries):
            cy = box[1] + 4 + rows * i + rows / 2
            pen.ellipse((box[0] + 6, cy - 3, box[0] + 12, cy + 3), fill=tuple(color))
            pen.text((box[0] + 17, cy), name, fill=(0, 0, 0), font=small, anchor="lm")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)
