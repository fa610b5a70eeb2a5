"""Two process settings that keep a CPU training step at its speed: denormals flushed, freed memory kept.

Both were found by profiling the MLP VAE's step on a 2-core Xeon VM (scripts/bench_peer.py's nets, bf16):

- **Denormals.** A parameter whose gradient is exactly zero (a weight from a pixel that is always 0, a dead ReLU
  unit) has its Adam moments decay by beta1 = 0.9 a step, into the denormal range (below 1.2e-38) within about 700
  steps. x86 computes on denormals through a microcode assist, ~100x slower per element: the step went from 3.4 to
  4.5 ms after 600 steps, and stayed there. Flushing them to zero (FTZ/DAZ) keeps it at 3.2. Numbers that small
  take no part in training: the peer bench's test losses came out the same to the second decimal either way.
- **Freed memory.** glibc gives memory freed at the top of its heap back to the kernel once more than ~2x its
  dynamic mmap threshold is free, and serves large blocks by mmap; a training step allocates and frees the same
  few MB of activations and gradients every step, so each step paid ~700 page faults (0.5-0.8 ms of a 4 ms step)
  to get them back. Keeping up to `malloc_keep_mb` of freed memory (mallopt's M_TRIM_THRESHOLD, with blocks up to
  32 MB served from the heap) removes them; the process keeps the memory its largest step needed, which it
  needed anyway.

The flush is per thread and inherited by threads created later: it has to be set before torch starts its
OpenMP workers (the first parallel op), so `aelab train` sets both before it builds data or model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold (64-bit): larger blocks still mmap
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"  # where mallopt exists


def flush_denormals(on: bool) -> bool:
    """Compute denormal floats as zero on this thread and the threads it starts from now on; whether it took
    (False where the CPU has no such mode, or `on` is False)."""
    return bool(torch.set_flush_denormal(on)) and on


def keep_freed_memory(megabytes: int) -> bool:
    """glibc: keep up to `megabytes` of freed memory in the process instead of returning it to the kernel, and
    serve blocks below 32 MB from the heap; whether it took (False off glibc, or for 0: glibc's defaults)."""
    if megabytes <= 0 or not GLIBC:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, int(megabytes) << 20))
    except (OSError, AttributeError):
        return False


def prepare_host(flush: bool, keep_mb: int) -> dict[str, bool]:
    """Both settings, as trainer.flush_denormals and trainer.malloc_keep_mb ask; what took, for train.log."""
    taken = {"flush_denormals": flush_denormals(flush), "malloc_keep_mb": keep_freed_memory(keep_mb)}
    log.info("host settings: %s", ", ".join(f"{k} {'on' if v else 'off'}" for k, v in taken.items()))
    return taken
