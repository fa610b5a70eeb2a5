"""An image folder decoded and resized once into a uint8 array on disk, so training reads it from memory.

The cache is one .npy file (N, C, H, W) under $AELAB_DATA_DIR/folders (default ~/.cache/aelab/folders), named by a
hash of everything its pixels depend on: the files (path, size, mtime) and the resize settings. A changed file or
setting gives another name, so a stale cache is never read; it is rebuilt and the old one removed. The build runs in
worker processes that each decode a run of files straight into the memory-mapped output, and writes to a temporary
name renamed into place at the end, so an interrupted build leaves nothing that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Protocol

import numpy as np

from aelab.errors import UserError
from aelab.files import TEMP_MARK, atomic_path, data_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the layout of the cache file changes: old files are then ignored
MEMORY_FRACTION = 0.5  # of the available memory: the pixels, and one gathered copy of them per split, must fit
MIN_FILES_PER_WORKER = 256  # below this a worker process costs more to start than it saves


class Images(Protocol):
    """What the cache reads: a list of files and one decoded, resized image per index (ImageFiles)."""

    files: list[Path]
    size: int
    channels: int
    resampling: str

    def pixels(self, i: int) -> np.ndarray: ...  # (C, H, W) uint8


def cache_dir() -> Path:
    """Where cached folders live: beside the project's other cached data ($AELAB_DATA_DIR, default ~/.cache/aelab)."""
    return data_dir() / "folders"


def fingerprint(images: Images) -> str:
    """A hash of what the cached pixels depend on: each file's path, size and mtime, and how it is resized."""
    from PIL import __version__ as pil_version

    digest = hashlib.sha256()
    settings = {"version": CACHE_VERSION, "size": images.size, "channels": images.channels,
                "resampling": images.resampling, "pillow": pil_version}  # another Pillow may resize differently
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in images.files:
        stat = path.stat()
        digest.update(f"\n{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_path(root: Path, images: Images, key: str) -> Path:
    """<folder name>-<hash of its path>-<size>px<channels>c-<content hash>.npy: readable, and unique per folder."""
    return cache_dir() / f"{_prefix(root, images)}{key[:20]}.npy"


def _prefix(root: Path, images: Images) -> str:
    """The part of a cache name shared by every version of one folder at one size: stale versions are found by it."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name)[:40] or "folder"
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return f"{slug}-{where}-{images.size}px{images.channels}c-"


def pixel_bytes(images: Images) -> int:
    return len(images.files) * images.channels * images.size * images.size


def available_memory() -> int:
    """Bytes the system can hand out now (Linux MemAvailable: free memory plus reclaimable page cache)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other Unixes: free pages only (a lower bound)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30  # no way to ask (Windows without psutil): assume a modest machine


def memory_limit() -> int:
    """The most pixel bytes held in memory; above it a folder streams from disk."""
    return int(MEMORY_FRACTION * available_memory())


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def load_cached(root: Path, images: Images) -> tuple[np.ndarray, str | None]:
    """(N, C, H, W) uint8 pixels of every file, from the cache or decoded now; the second item says what was built.

    The array is a copy-on-write memory map: training gathers its splits out of it without a second copy in memory.
    """
    key = fingerprint(images)
    path = cache_path(root, images, key)
    shape = (len(images.files), images.channels, images.size, images.size)
    pixels = _read(path, shape)
    if pixels is not None:
        return pixels, None
    start = time.perf_counter()
    workers = build_cache(images, path)
    _remove_stale(root, images, keep=path)
    pixels = _read(path, shape)
    if pixels is None:  # written and renamed a moment ago: only a full or broken disk gets here
        raise OSError(f"the image cache {path} did not read back")
    note = (f"data: decoded {len(images.files):,} images of {root} once ({time.perf_counter() - start:.1f} s, "
            f"{workers} process{'es' if workers > 1 else ''}), cached at {path}")
    return pixels, note


def _read(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None when there is none or it is not what these files make (then it is rebuilt)."""
    try:
        pixels = np.load(path, mmap_mode="c")  # "c": writable for torch.from_numpy, the file is never changed
    except (OSError, ValueError):
        return None
    return pixels if pixels.shape == shape and pixels.dtype == np.uint8 else None


def worker_count(n: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n // MIN_FILES_PER_WORKER))


def build_cache(images: Images, path: Path, workers: int | None = None) -> int:
    """Decode every image into `path`, atomically; returns how many processes did the work.

    A corrupt image raises UserError on data.source.path naming its file, also when a worker process found it.
    """
    n = len(images.files)
    workers = worker_count(n) if workers is None else workers
    with atomic_path(path, ".npy", what="image cache") as tmp:  # per process: parallel sweep jobs never share one
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(n, images.channels, images.size, images.size))
        del out  # the header and the file's full length are written; workers map it themselves
        chunks = _chunks(n, workers * 4)  # a few chunks per worker evens out files of unequal cost
        if workers == 1:
            for first, last in chunks:
                _raise_if_failed(_decode_into(images, tmp, first, last))
        else:
            _decode_in_workers(images, tmp, chunks, workers)
    return workers


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, math.ceil(n / max(1, parts)))
    return [(first, min(first + step, n)) for first in range(0, n, step)]


def _decode_in_workers(images: Images, tmp: Path, chunks: Sequence[tuple[int, int]], workers: int) -> None:
    # fork where there is one: workers inherit the file list and the loaded modules instead of importing torch again
    # (they only run Pillow and numpy, never torch's thread pools, so forking a process that holds them is safe)
    method = "fork" if sys.platform.startswith("linux") else None
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(images,)) as pool:
        futures = [pool.submit(_decode_chunk, str(tmp), first, last) for first, last in chunks]
        for future in as_completed(futures):
            failure = future.result()  # re-raises what is not a bad image: a worker died, the disk filled, ...
            if failure is not None:
                for other in futures:
                    other.cancel()  # the build is abandoned: chunks not started yet need not decode
                _raise_if_failed(failure)


_WORKER_IMAGES: Images | None = None


def _init_worker(images: Images) -> None:
    global _WORKER_IMAGES
    _WORKER_IMAGES = images


def _decode_chunk(tmp: str, first: int, last: int) -> tuple[int, str, str, str | None] | None:
    assert _WORKER_IMAGES is not None
    return _decode_into(_WORKER_IMAGES, Path(tmp), first, last)


def _decode_into(images: Images, tmp: Path, first: int, last: int) -> tuple[int, str, str, str | None] | None:
    """Decode files [first, last) into the mapped output; a bad image comes back as (index, key, problem, allowed).

    The error travels as plain values: UserError's own pickling would not rebuild its key.
    """
    out = np.load(tmp, mmap_mode="r+")
    try:
        for i in range(first, last):
            try:
                out[i] = images.pixels(i)
            except UserError as error:
                return i, error.key, error.problem, error.allowed
        out.flush()
    finally:
        del out
    return None


def _raise_if_failed(failure: tuple[int, str, str, str | None] | None) -> None:
    if failure is not None:
        _, key, problem, allowed = failure
        raise UserError(key, problem, allowed)


def _remove_stale(root: Path, images: Images, keep: Path) -> None:
    """Older versions of this folder's cache at these settings: their files changed, nothing will read them again."""
    for old in cache_dir().glob(_prefix(root, images) + "*.npy"):
        if old != keep and TEMP_MARK not in old.name:  # another process's build in progress stays
            old.unlink(missing_ok=True)
