"""Where aelab keeps what it computes once (its data dir), and files written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


TEMP_MARK = ".tmp-"  # in every temporary name atomic_path gives: a cleaner that globs a cache dir spares these


def data_dir() -> Path:
    """$AELAB_DATA_DIR (default ~/.cache/aelab): decoded data, folder caches, feature nets, fast-path choices."""
    return Path(os.environ.get("AELAB_DATA_DIR", "~/.cache/aelab")).expanduser()


@contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside target (per process, hidden) that is renamed onto target when the block ends
    without error, and removed when it raises: a reader, a parallel sweep job or a later run sees the old file
    or the whole new one, never half a file. suffix: an ending the writer insists on (np.save adds ".npy")."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
