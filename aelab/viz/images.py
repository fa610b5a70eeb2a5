"""Image grids and files (PNG strips, animated GIFs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aelab.files import atomic_path


def grid(images: Tensor, nrow: int = 8, pad: int = 2) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (3, H', W') grid image in [0, 1]: torchvision's make_grid layout (nrow
    images a row, `pad` white pixels around each), pixel for pixel. Written out because importing
    torchvision.utils costs 2 s (it loads all of torchvision), which every training run would pay at
    its first picture for a dozen lines of tiling."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.dim() == 3:  # one (C, H, W) image
        images = images.unsqueeze(0)
    if images.shape[1] == 1:  # greyscale -> RGB
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    if n == 1:  # make_grid returns a lone image as it is, unpadded
        return images[0].clone()
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = images.new_ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        top, left = (i // cols) * (h + pad) + pad, (i % cols) * (w + pad) + pad
        out[:, top:top + h, left:left + w] = images[i]
    return out


def to_uint8_hwc(image: Tensor) -> np.ndarray:  # (3, H, W) float in [0, 1] -> (H, W, 3) uint8
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_png(image: Tensor, path: Path) -> Path:
    """Save a (3, H, W) grid image."""
    from PIL import Image

    with atomic_path(path, path.suffix, what="picture") as tmp:
        Image.fromarray(to_uint8_hwc(image)).save(tmp)
    return path


def save_gif(frames: list[Tensor], path: Path, frame_ms: int = 80, loop_back: bool = True) -> Path:
    """Save (3, H, W) frames as an animated GIF; loop_back plays it forward then backward."""
    from PIL import Image

    seq = frames + frames[-2:0:-1] if loop_back and len(frames) > 2 else frames
    pics = [Image.fromarray(to_uint8_hwc(f)) for f in seq]
    with atomic_path(path, path.suffix, what="animation") as tmp:
        pics[0].save(tmp, save_all=True, append_images=pics[1:], duration=frame_ms, loop=0)
    return path
