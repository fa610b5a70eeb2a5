"""Reconstruction likelihoods: turn decoder logits into a mean image and a per-image loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aelab.errors import UserError
from aelab.nets.fastpath import FAST_PATHS, probe, rows_bucket

MAX_HALVINGS = 4  # sigmoid factors multiplied before one log: 2**4 of them, each in [1/2, 1), so >= 2**-16


def sum_softplus(logits: Tensor, *, consume: bool = False) -> Tensor:  # (..., P) -> (...)
    """sum softplus(l) over the last axis, with one log per 16 entries instead of one per entry.

    softplus(l) = relu(l) - log sigmoid(|l|), and sum log sigmoid(|l|) is the log of a product: the
    factors are multiplied in place by halving the axis (contiguous, vectorised multiplies) before
    one log per group. CPU log is several times slower than sigmoid, and this sum is most of the
    cost of the Bernoulli loss and of importance sampling; the result matches F.softplus to fp32
    rounding. sum relu(l) is taken as (sum l + sum |l|) / 2, so the only temporary is |l| (none
    with consume=True, which overwrites `logits`).
    """
    relu_sum = logits.sum(-1)
    factors = logits.abs_() if consume else logits.abs()
    relu_sum.add_(factors.sum(-1)).mul_(0.5)
    return relu_sum - _sum_log_sigmoid_of_abs(factors)


class _BernoulliNLL(torch.autograd.Function):
    """Per-image summed BCE with logits, (B, ...) -> (B,), for CPU training.

    F.binary_cross_entropy_with_logits spends one log per pixel, and a CPU log costs about as much as
    the whole 784x400 matmul of the MLP's first layer; this form takes one log per 16 pixels
    (sum_softplus) in the forward pass and none in the backward one (sigmoid(l) - x).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        dtype = torch.promote_types(logits.dtype, torch.float32)  # half precision would spoil the grouped products
        flat, target = logits.to(dtype).flatten(1), x.to(dtype).flatten(1)
        return sum_softplus(flat) - (flat * target).sum(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        logits, x = ctx.saved_tensors
        g = grad.view(-1, *[1] * (logits.dim() - 1))
        dtype = grad.dtype
        grad_logits = (torch.sigmoid(logits.to(dtype)) - x.to(dtype)).mul_(g).to(logits.dtype) \
            if ctx.needs_input_grad[0] else None
        grad_x = (-logits.to(dtype) * g).to(x.dtype) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def _bce_nll(logits: Tensor, x: Tensor) -> Tensor:  # (B, ...) -> (B,)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def _bce_sum(logits: Tensor, x: Tensor) -> Tensor:  # scalar: summed over images and pixels
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum")


def _log_free_is_faster(logits: Tensor, summed: bool = False) -> bool:
    """The bernoulli_nll fast path's choice for logits of this shape: both forms timed on random logits,
    forward and (when training) backward; `summed`: against the batch-summed BCE (one pass fewer than
    per-image sums, 180 against 230 us fwd+bwd at 128x784 on a 2-core Xeon), what a batch's loss takes."""
    backward = torch.is_grad_enabled() and logits.requires_grad
    pixels = logits[0].numel()
    key = f"{rows_bucket(logits.shape[0])}x{pixels}{' train' if backward else ''}{' sum' if summed else ''}"

    def candidates():
        dtype = torch.promote_types(logits.dtype, torch.float32)
        probe_logits = probe(logits.shape[0], pixels, dtype=dtype).requires_grad_(backward)
        target = torch.sigmoid(probe(logits.shape[0], pixels, dtype=dtype))

        def run(nll) -> None:
            with torch.set_grad_enabled(backward):
                out = nll(probe_logits, target).sum()
                if backward:
                    out.backward()
                    probe_logits.grad = None

        return lambda: run(_BernoulliNLL.apply), lambda: run(_bce_sum if summed else _bce_nll), None

    return FAST_PATHS.choose("bernoulli_nll", key, candidates)


def _takes_log_free(logits: Tensor, summed: bool = False) -> bool:
    """Whether these logits take the log-free form: CPU batches only (GPUs keep the fused kernel), as timed."""
    return logits.device.type == "cpu" and logits.dim() > 1 and _log_free_is_faster(logits, summed)


class Bernoulli:
    """Pixels in [0, 1] as Bernoulli means; BCE with logits is the numerically stable fused form."""

    name = "bernoulli"
    support = (0.0, 1.0)  # the data range this likelihood models
    EPS = 1e-3  # floor on probabilities given by logits_of: a linear reconstruction outside (0, 1) costs a bounded amount

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def logits_of(self, mean: Tensor) -> Tensor:
        """Logits whose mean is `mean` (clipped into the open unit interval): for decoders that output data space."""
        return torch.logit(mean.clamp(self.EPS, 1.0 - self.EPS))

    def nll(self, logits: Tensor, x: Tensor) -> Tensor:  # (B,) summed over pixels
        # CPU log is slow (see _BernoulliNLL), by how much depends on the CPU: timed (fast path
        # bernoulli_nll); GPUs keep the fused kernel
        if _takes_log_free(logits):
            return _BernoulliNLL.apply(logits, x)
        return _bce_nll(logits, x)

    def batch_nll(self, logits: Tensor, x: Tensor) -> Tensor:  # scalar: mean over images
        if _takes_log_free(logits, summed=True):
            return _BernoulliNLL.apply(logits, x).sum() / x.shape[0]
        return _bce_sum(logits, x) / x.shape[0]

    def nll_of_draws(self, logits: Tensor, x: Tensor, consume: bool = False) -> Tensor:  # (S, B, *shape), (B, *shape) -> (S, B)
        """nll of S decodes of each example: sum softplus(l) - x . l. consume=True overwrites logits.

        Written as sum l (1/2 - x) + sum (|l|/2 - log sigmoid(|l|)) (softplus(l) = l/2 + |l|/2 - log sigmoid(|l|)):
        the linear part is one streaming multiply-and-sum, and the rest takes one log per 16 pixels, where
        sum softplus(l) and x . l taken apart cost five passes over the logits and a log each. (A batched
        matrix-vector product for the linear part, (B, S, P) strided views, ran 5x slower than multiply-and-sum
        on a 2-core AMD EPYC at 2 threads: 1.04 against 0.19 ms for 20 x 100 draws of 784 pixels.)
        """
        flat = logits.flatten(2)  # (S, B, P)
        weights = 0.5 - x.flatten(1).to(flat.dtype)  # (B, P), broadcast over the draws
        linear = (flat * weights).sum(-1)  # (S, B)
        factors = flat.abs_() if consume else flat.abs()
        half_abs = factors.sum(-1).mul_(0.5)
        return linear + half_abs - _sum_log_sigmoid_of_abs(factors)


def _sum_log_sigmoid_of_abs(factors: Tensor) -> Tensor:  # (..., P) holding |l|, overwritten -> (...)
    """sum log sigmoid(|l|) over the last axis with one log per 16 entries (see sum_softplus)."""
    factors.sigmoid_()  # in [1/2, 1)
    n = factors.shape[-1]
    for _ in range(MAX_HALVINGS):
        if n % 2:
            break
        n //= 2
        factors = factors[..., :n].mul_(factors[..., n : 2 * n])
    return factors.log().sum(-1)


class Gaussian:
    """Unit-variance Gaussian: half the summed squared error per image (the NLL up to a constant)."""

    name = "gaussian"
    support = None  # unbounded

    def mean(self, logits: Tensor) -> Tensor:
        return logits

    def logits_of(self, mean: Tensor) -> Tensor:
        return mean

    def nll(self, logits: Tensor, x: Tensor) -> Tensor:  # (B,)
        return 0.5 * F.mse_loss(logits, x, reduction="none").flatten(1).sum(1)

    def batch_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        return 0.5 * F.mse_loss(logits, x, reduction="sum") / x.shape[0]

    def nll_of_draws(self, logits: Tensor, x: Tensor, consume: bool = False) -> Tensor:  # (S, B, *shape), (B, *shape) -> (S, B)
        flat = logits.flatten(2)
        diff = flat.sub_(x.flatten(1)) if consume else flat - x.flatten(1)
        return 0.5 * diff.pow_(2).sum(-1)


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
Likelihood = Bernoulli | Gaussian


def make_likelihood(name: str) -> Likelihood:
    if name not in LIKELIHOODS:
        raise UserError("model.likelihood", f"unknown value {name!r}", "one of: " + ", ".join(LIKELIHOODS))
    return LIKELIHOODS[name]()
