"""An image folder (optionally one subfolder per class), resized on read: cached in memory, or streamed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from aelab.data.sources import StreamData, TensorData
from aelab.errors import UserError, os_reason
from aelab.schema import Annotated, OneOf, Range

log = logging.getLogger(__name__)

CHANNELS = (1, 3)  # greyscale, RGB
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RESAMPLING = "bilinear"  # Pillow's filter for every resize (it also keys the cache: another filter, other pixels)


def read_pixels(path: Path, size: int, channels: int) -> np.ndarray:  # (C, size, size) uint8
    """One image, converted and resized; the only place that does so (streamed and cached pixels are the same)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            img = img.resize((size, size), Image.Resampling[RESAMPLING.upper()])
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError("data.source.path", f"cannot read image {path}: {exc}") from None
    return np.array(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1), order="C")  # own, writable copy


class ImageFiles(torch.utils.data.Dataset):
    """Reads, converts and resizes one image per item: (uint8 (C, H, W), label)."""

    resampling = RESAMPLING

    def __init__(self, files: list[Path], labels: list[int], size: int, channels: int, root: Path | None = None) -> None:
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.root = root  # the folder the files were found under

    def relative_names(self) -> list[str]:
        """Each file's path under the folder (what commands that write one output per image name it by)."""
        return [str(p.relative_to(self.root) if self.root is not None else p.name) for p in self.files]

    def pixels(self, i: int) -> np.ndarray:  # (C, H, W) uint8
        return read_pixels(self.files[i], self.size, self.channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.pixels(i)), self.labels[i]


def load_folder(path: str | None, size: Annotated[int, Range(1, None)] = 32,
                channels: Annotated[int, OneOf(CHANNELS)] = 1, cache: bool = True) -> TensorData | StreamData:
    """All images under path; class labels from subfolder names when every image sits in one.

    cache: decode and resize every image once into a cached uint8 array and train from memory, when the pixels fit
    in the in-memory limit (aelab/data/image_cache.py); false, or above the limit, streams them from disk each epoch.
    """
    if not path:
        raise UserError("data.source.path", "no folder given", "data=folder data.source.path=/path/to/images")
    if channels not in CHANNELS:  # the schema's list: a second line for callers from Python
        raise UserError("data.source.channels", f"got {channels}", "1 or 3")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError("data.source.path", f"no such directory: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError("data.source.path", f"no images in {root}", "suffixes: " + ", ".join(sorted(IMAGE_SUFFIXES)))
    subdirs = {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
    labelled = len(subdirs) > 0 and all(len(p.relative_to(root).parts) > 1 for p in files)
    class_names = sorted(subdirs) if labelled else None
    index = {name: i for i, name in enumerate(class_names or [])}
    labels = [index[p.relative_to(root).parts[0]] if labelled else -1 for p in files]
    dataset = ImageFiles(files, labels, size, channels, root)
    name, num_classes = f"folder:{root}", len(class_names) if class_names else None
    notes: list[str] = []
    if cache:
        pixels, notes = _cached(root, dataset)
        if pixels is not None:
            y = torch.tensor(labels, dtype=torch.long) if labelled else None
            return TensorData(name, pixels, y, num_classes=num_classes, class_names=class_names, notes=notes)
    return StreamData(name, dataset, (channels, size, size), num_classes=num_classes, class_names=class_names,
                      notes=notes)


def _cached(root: Path, dataset: ImageFiles) -> tuple[torch.Tensor | None, list[str]]:
    """The folder's pixels (N, C, H, W) from the cache (built now if needed), or None and why it streams instead."""
    from aelab.data import image_cache

    need, limit = image_cache.pixel_bytes(dataset), image_cache.memory_limit()
    if need > limit:
        note = (f"data: {image_cache.gigabytes(need)} of pixels exceeds the in-memory limit "
                f"({image_cache.gigabytes(limit)}, {image_cache.MEMORY_FRACTION:.0%} of the available memory): "
                "streaming from disk")
        log.warning(note)
        return None, [note]
    try:
        pixels, built = image_cache.load_cached(root, dataset)
    except OSError as exc:  # no room or no permission for the cache: the run still works, only slower
        note = (f"data: cannot write the image cache under {image_cache.cache_dir()} ({os_reason(exc)}): "
                "streaming from disk")
        log.warning(note)
        return None, [note]
    if built:
        log.info(built)
    return torch.from_numpy(pixels), [built] if built else []


def _check_folder_options(options: dict, key: str) -> None:
    """The folder must be there before the run starts: its images are only read once the run is under way."""
    if not options.get("path"):
        raise UserError(f"{key}.path", "no folder given", "data=folder data.source.path=/path/to/images")
    if not Path(str(options["path"])).expanduser().is_dir():
        raise UserError(f"{key}.path", f"no such directory: {Path(str(options['path'])).expanduser()}")


load_folder.check_options = _check_folder_options  # type: ignore[attr-defined]  (read by aelab/schema.py)
