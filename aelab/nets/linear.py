"""A drop-in nn.Linear whose fp32 CPU matmuls (forward and backward) may run on oneDNN.

torch's CPU `mm` calls MKL, and MKL takes its AVX2 code path on non-Intel CPUs even where
AVX-512 is there: on one 2-core AMD EPYC a 128x784x400 product ran at about 200 GFLOP/s through
MKL and about 390 GFLOP/s through oneDNN (the library torch already uses for CPU convolutions);
on another of the same kind torch's matmul was the faster, and on an Intel Xeon it won at every
shape. So the way is chosen per layer shape by timing both (the `linear` fast path of
aelab/nets/fastpath.py). Elsewhere (CUDA, autocast, half types, torch without oneDNN) the layer is
exactly nn.Linear. Parameters and state_dict keys are nn.Linear's, so checkpoints do not depend on
the path taken.

Set AELAB_ONEDNN_LINEAR=0 to leave oneDNN out altogether (if a future torch drops the op).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from aelab.nets.fastpath import FAST_PATHS, probe, rows_bucket
from aelab.nets.precision import bf16_matmuls_on


def _onednn_op():
    """torch's oneDNN linear (the op inductor uses for CPU linear layers), or None if absent."""
    if os.environ.get("AELAB_ONEDNN_LINEAR", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _onednn_op()


if _ONEDNN is not None:
    # Inductor lowers mkldnn._linear_pointwise only for constant (frozen) weights; under torch.compile
    # the call goes through this opaque custom op instead, so compiled training keeps oneDNN's matmul.
    @torch.library.custom_op("aelab::onednn_linear", mutates_args=())
    def _compiled_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _ONEDNN(x, weight, bias, "none", [], "")

    @_compiled_linear.register_fake
    def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return x.new_empty(x.shape[0], weight.shape[0])


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias on oneDNN: (M, K), (N, K) -> (M, N); strided (transposed) views are read in place."""
    if torch.compiler.is_compiling():
        return _compiled_linear(x, weight, bias)
    return _ONEDNN(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = _linear(grad, weight.t()) if ctx.needs_input_grad[0] else None  # grad @ W
        grad_w = _linear(grad.t(), x.t()) if ctx.needs_input_grad[1] else None  # grad.T @ x
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def onednn_applies(x: Tensor, weight: Tensor) -> bool:
    """fp32 on the CPU with no autocast: the case where oneDNN is faster and exact to fp32 rounding."""
    return (_ONEDNN is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing())  # TorchScript / ONNX export records plain F.linear: portable files


def onednn_is_faster(rows: int, weight: Tensor, bias: Tensor | None, backward: bool) -> bool:
    """The `linear` fast path's choice for a (rows, in) x (out, in) product: times oneDNN against torch's
    matmul on random operands of that shape, forward and (when training) the two backward products."""
    n_out, n_in = weight.shape
    # inside bf16_matmuls() both ways round their operands to bf16 and time differently: a choice of their own
    mode = (" train" if backward else "") + (" bf16 matmuls" if bf16_matmuls_on() else "")
    key = f"{rows_bucket(rows)}x{n_in}x{n_out}{mode}"

    def candidates():
        x, w = probe(rows, n_in), probe(n_out, n_in)
        b = None if bias is None else probe(n_out)
        g = probe(rows, n_out)

        def fast() -> None:
            _ONEDNN(x, w, b, "none", [], "")
            if backward:
                _ONEDNN(g, w.t(), None, "none", [], "")
                _ONEDNN(g.t(), x.t(), None, "none", [], "")

        def plain() -> None:  # what autograd runs for F.linear: addmm forward, two mm backward
            F.linear(x, w, b)
            if backward:
                torch.mm(g, w)
                torch.mm(g.t(), x)

        return fast, plain, None

    with torch.no_grad():
        return FAST_PATHS.choose("linear", key, candidates)


class Linear(nn.Linear):
    """nn.Linear with the oneDNN CPU path described in the module docstring."""

    def forward(self, x: Tensor) -> Tensor:
        if not onednn_applies(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        backward = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        rows = x.numel() // max(x.shape[-1], 1)
        if rows == 0 or not onednn_is_faster(rows, self.weight, self.bias, backward):
            return F.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return out.view(*lead, out.shape[-1])
