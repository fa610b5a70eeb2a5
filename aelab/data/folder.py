"""An image folder (optionally one subfolder per class), resized on read and streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aelab.data.sources import StreamData
from aelab.errors import UserError
from aelab.schema import Annotated, OneOf, Range

CHANNELS = (1, 3)  # greyscale, RGB
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFiles(torch.utils.data.Dataset):
    """Reads, converts and resizes one image per item: (uint8 (C, H, W), label)."""

    def __init__(self, files: list[Path], labels: list[int], size: int, channels: int, root: Path | None = None) -> None:
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.root = root  # the folder the files were found under

    def relative_names(self) -> list[str]:
        """Each file's path under the folder (what commands that write one output per image name it by)."""
        return [str(p.relative_to(self.root) if self.root is not None else p.name) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.channels == 1 else "RGB")
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UserError("data.source.path", f"cannot read image {path}: {exc}") from None
        x = torch.from_numpy(pixels.copy())
        x = x.unsqueeze(0) if self.channels == 1 else x.permute(2, 0, 1)
        return x, self.labels[i]


def load_folder(path: str | None, size: Annotated[int, Range(1, None)] = 32,
                channels: Annotated[int, OneOf(CHANNELS)] = 1) -> StreamData:
    """All images under path; class labels from subfolder names when every image sits in one."""
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
    return StreamData(
        f"folder:{root}", dataset, (channels, size, size),
        num_classes=len(class_names) if class_names else None, class_names=class_names,
    )


def _check_folder_options(options: dict, key: str) -> None:
    """The folder must be there before the run starts: its images are only read once the run is under way."""
    if not options.get("path"):
        raise UserError(f"{key}.path", "no folder given", "data=folder data.source.path=/path/to/images")
    if not Path(str(options["path"])).expanduser().is_dir():
        raise UserError(f"{key}.path", f"no such directory: {Path(str(options['path'])).expanduser()}")


load_folder.check_options = _check_folder_options  # type: ignore[attr-defined]  (read by aelab/schema.py)
