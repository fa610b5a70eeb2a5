"""Encoder / decoder builders. An arch maps an input shape to networks of any in/out width."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch-free at import: the trainer's schema reads nets.fastpath on the CLI's light path
    from torch import nn


class Arch(Protocol):
    def encoder(self, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0) -> nn.Module:
        """(B, C, H, W) or (B, D) [+ (B, extra) condition] -> (B, out_features)."""
        ...

    def decoder(self, in_features: int, output_shape: tuple[int, ...]) -> nn.Module:
        """(B, in_features) -> (B, *output_shape) logits."""
        ...
