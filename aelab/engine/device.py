"""Device and precision choices."""

from __future__ import annotations

import contextlib

import torch

from aelab.engine.options import DEVICES, PRECISIONS  # noqa: F401  (their one home is torch-free: the pre-check reads them)
from aelab.errors import UserError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit accelerator that is absent is an error, not a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device", "cuda requested but no CUDA GPU is available", "device=auto or device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device", "mps requested but Apple MPS is not available", "device=auto or device=cpu")
    if name not in DEVICES:
        raise UserError("device", f"unknown value {name!r}", "one of: " + ", ".join(DEVICES))
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 autocast on a GPU that supports it, full precision elsewhere; fp16 autocast (the trainer adds a
    gradient scaler) where asked, which is what older GPUs without bf16 need."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
