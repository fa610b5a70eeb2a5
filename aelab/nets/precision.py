"""Where a mixed-precision run computes in full precision anyway.

Under autocast (bf16 on a CPU with bf16 dot products, or a GPU) every matmul runs in the low precision, and that
suits the networks' layers; it does not suit the loss arithmetic that expands a squared distance as
|a|^2 + |b|^2 - 2 a.b (MMD kernels, codebook look-ups, mixture densities, covariances): with bf16's 8-bit mantissa
the three terms cancel to noise. Such computations run inside `full_precision()`, on fp32 copies of their inputs.

The other way to bf16 on a CPU is `bf16_matmuls()`: the step stays in fp32 and oneDNN rounds each matmul's
operands to bf16 as it packs them (accumulating in fp32, returning fp32). Nothing is cast by a kernel of its own
and no activation is stored in bf16: on the MLP VAE that step ran 11-14% faster than autocast's on an AMX Xeon, on
convolutions much slower (the trainer times it: aelab/engine/precision.py). A step that enters full_precision()
keeps autocast: the setting is global, and the block's backward runs after the block has closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


_BF16_MATMULS = False  # inside bf16_matmuls(): the layers' fast-path keys name it (their timings differ)
_EXACT_BLOCKS = 0  # full_precision() blocks entered in this process


def bf16_matmuls_on() -> bool:
    return _BF16_MATMULS


def exact_blocks_entered() -> int:
    """How many full_precision() blocks this process has entered: a step that enters one cannot take
    bf16_matmuls(), whose setting would round those blocks' matmuls in the backward pass (autograd runs them after
    the block has closed), where autocast computes them in fp32."""
    return _EXACT_BLOCKS


def bf16_matmuls(enabled: bool = True) -> contextlib.AbstractContextManager:
    """fp32 CPU matmuls (forward and backward) with their operands rounded to bf16 by oneDNN for the block, where
    enabled; the previous setting is restored after (validation and eval compute in exact fp32)."""
    return _matmul_setting(True) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def full_precision(*tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Autocast and bf16_matmuls() off for the block's forward; yields the tensors with half types raised to fp32
    (fp32 and fp64 unchanged)."""
    global _EXACT_BLOCKS
    _EXACT_BLOCKS += 1
    device = tensors[0].device.type if tensors else "cpu"
    exact = _matmul_setting(False) if _BF16_MATMULS else contextlib.nullcontext()
    with torch.autocast(device_type=device, enabled=False), exact:
        yield tuple(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)


@contextlib.contextmanager
def _matmul_setting(bf16: bool) -> Iterator[None]:
    """oneDNN's fp32 matmul precision (bf16-rounded operands, or exact) and this module's record of it, for the block;
    both put back after."""
    global _BF16_MATMULS
    setting = torch.backends.mkldnn.matmul
    before, was = setting.fp32_precision, _BF16_MATMULS
    setting.fp32_precision, _BF16_MATMULS = ("bf16" if bf16 else "none"), bf16
    try:
        yield
    finally:
        setting.fp32_precision, _BF16_MATMULS = before, was
