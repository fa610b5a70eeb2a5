"""MADE, the masked autoencoder for distribution estimation (Germain et al. 2015): a feed-forward net whose
output i depends only on the inputs that come before i in a chosen order (the autoregressive property).

Used by the inverse autoregressive flow posterior (aelab/models/vae_iaf.py) and the masked autoregressive
flow prior (aelab/models/maf_prior.py). Each hidden unit gets a degree in [1, D-1]; a unit sees the inputs of
degree <= its own, an output of degree d sees the hidden units of degree < d. Output i therefore depends on
inputs strictly before i in the order: the Jacobian d out / d in is strictly triangular, which is what makes an
autoregressive flow's log-determinant a sum of its diagonal terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """x (B, D) [, context (B, C)] -> `heads` tensors (B, D) each; output i of each head depends on the inputs
    before i in the order (natural order 0, 1, ..., D-1, or its reverse) and on the whole context.

    hidden: the hidden layers' widths (may be empty: one masked linear map). The context, where there is one,
    enters the first hidden layer and the output through unmasked linear maps (IAF's h from the encoder).
    """

    def __init__(self, dim: int, hidden: Sequence[int], heads: int = 2, context_dim: int = 0,
                 reverse: bool = False) -> None:
        super().__init__()
        self.dim, self.heads, self.context_dim, self.reverse = int(dim), int(heads), int(context_dim), bool(reverse)
        degrees_in = torch.arange(1, dim + 1)  # (D,) position of each input in the order, 1-based
        if reverse:
            degrees_in = degrees_in.flip(0)
        low = min(1, dim - 1)  # with D = 1 no input may reach the output: hidden units of degree 0 see none
        degrees = [degrees_in]
        for width in hidden:  # cycling degrees: every degree in [low, D-1] gets units (deterministic masks)
            degrees.append(torch.arange(int(width)) % max(dim - 1, 1) + low)
        layers = []
        for prev, nxt in zip(degrees[:-1], degrees[1:]):
            layers.append(MaskedLinear(len(prev), len(nxt), (nxt[:, None] >= prev[None, :]).float()))
        out_mask = (degrees_in[:, None] > degrees[-1][None, :]).float().repeat(heads, 1)  # (heads*D, H) strict
        self.hidden_layers = nn.ModuleList(layers)
        self.output = MaskedLinear(len(degrees[-1]), heads * dim, out_mask)
        # the context enters the first hidden layer and, unmasked, the output: the first output in the order sees
        # no hidden unit (none has degree < 1), and would otherwise be a constant
        self.context = nn.Linear(self.context_dim, int(hidden[0]), bias=False) if self.context_dim and len(hidden) else None
        self.context_out = nn.Linear(self.context_dim, heads * dim, bias=False) if self.context_dim else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, ...]:  # (B, D) -> heads x (B, D)
        h = x
        for i, layer in enumerate(self.hidden_layers):
            h = layer(h)
            if i == 0 and self.context is not None:
                h = h + self.context(context)
            h = F.elu(h)
        out = self.output(h)
        if self.context_out is not None:
            out = out + self.context_out(context)
        return out.chunk(self.heads, dim=-1)
