"""Where aelab keeps what it computes once (its data dir), and files written whole or not at all."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aelab.errors import WriteError, os_reason

log = logging.getLogger(__name__)


PROBE_BYTES = 64 * 1024  # what why_not_writable writes: more than the configs and logs a run writes first
TEMP_MARK = ".tmp-"  # in every temporary name atomic_path gives: a cleaner that globs a cache dir spares these


def data_dir() -> Path:
    """$AELAB_DATA_DIR (default ~/.cache/aelab): decoded data, folder caches, feature nets, fast-path choices."""
    return Path(os.environ.get("AELAB_DATA_DIR", "~/.cache/aelab")).expanduser()


def why_not_writable(path: Path | str) -> str | None:
    """Why files cannot be written at or below `path` (None if they can): a folder and a small file are made and
    removed in the nearest folder that exists, since permissions alone do not tell (root, read-only mounts, /proc,
    a full disk)."""
    import tempfile

    path = Path(path)
    existing = path.expanduser().absolute()
    if existing.exists() and not existing.is_dir():
        existing = existing.parent  # a file is replaced through a temporary file beside it
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:  # a folder and a small file in it: a full disk refuses the file even where the folder fits
        probe = Path(tempfile.mkdtemp(prefix=".aelab-probe-", dir=existing))
        try:
            (probe / "probe").write_bytes(bytes(PROBE_BYTES))
        finally:
            (probe / "probe").unlink(missing_ok=True)
            probe.rmdir()
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc})" if existing in (
            path.expanduser().absolute(), path.expanduser().absolute().parent) \
            else f"cannot create {path} ({exc.strerror or exc})"
    return None


@contextmanager
def writing(what: str, path: Path | str) -> Iterator[None]:
    """An OSError in the block (a full disk, a read-only folder) becomes a WriteError naming what was being
    written and where: one line for the user instead of a traceback."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(what, path, os_reason(exc)) from exc


@contextmanager
def atomic_path(target: Path | str, suffix: str = "", what: str = "file") -> Iterator[Path]:
    """A temporary path beside target (per process, hidden) that is renamed onto target when the block ends
    without error, and removed when it raises: a reader, a parallel sweep job or a later run sees the old file
    or the whole new one, never half a file (also when the process is killed mid-write: only the hidden temp
    is left). suffix: an ending the writer insists on (np.save adds ".npy", PIL reads the format from it).
    A failing write raises WriteError naming `what` and target."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}{suffix}")
    with writing(what, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def write_bytes(target: Path | str, data: bytes | memoryview, what: str, sync: bool = False) -> Path:
    """data as target, whole or not at all (atomic_path); sync: on the disk before the rename (checkpoints)."""
    with atomic_path(target, what=what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return Path(target)


def save_torch(obj: object, target: Path | str, what: str, sync: bool = False) -> Path:
    """torch.save(obj) as target through write_bytes: serialised in memory first, because torch's own file
    writer turns a full disk into an opaque RuntimeError ("unexpected pos 8000 vs 7894") and Python's names it."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(target, buffer.getbuffer(), what, sync)


def save_figure(fig: object, target: Path | str, what: str = "picture") -> Path:
    """A matplotlib figure as target (its suffix names the format), whole or not at all, and released."""
    import matplotlib.pyplot as plt

    target = Path(target)
    try:
        with atomic_path(target, target.suffix, what=what) as tmp:
            fig.savefig(tmp)  # type: ignore[attr-defined]
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return target


_unwritable_said: set[str] = set()


def cache_not_written(what: str, path: Path | str, exc: OSError) -> None:
    """A cache that cannot be written only costs its work again next time: say so once per kind of cache and
    process, and let the caller go on with what it computed in memory."""
    if what in _unwritable_said:
        log.debug("could not write %s %s: %s", what, path, exc)
        return
    _unwritable_said.add(what)
    log.warning("could not write the %s %s (%s): going on without it; it is computed again next time", what, path,
                os_reason(exc))
