"""Where a mixed-precision run computes in full precision anyway.

Under autocast (bf16 on a CPU with bf16 dot products, or a GPU) every matmul runs in the low precision, and that
suits the networks' layers; it does not suit the loss arithmetic that expands a squared distance as
|a|^2 + |b|^2 - 2 a.b (MMD kernels, codebook look-ups, mixture densities, covariances): with bf16's 8-bit mantissa
the three terms cancel to noise. Such computations run inside `full_precision()`, on fp32 copies of their inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def full_precision(*tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Autocast off on the tensors' device for the block; yields the tensors with half types raised to fp32 (fp32
    and fp64 unchanged)."""
    device = tensors[0].device.type if tensors else "cpu"
    with torch.autocast(device_type=device, enabled=False):
        yield tuple(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)
