"""Encoder / decoder builders. An arch maps an input shape to networks of any in/out width."""

from typing import Protocol

from torch import nn


class Arch(Protocol):
    def encoder(self, input_shape: tuple[int, int, int], out_features: int, extra_features: int = 0) -> nn.Module:
        """(B, C, H, W) [+ (B, extra) condition] -> (B, out_features)."""
        ...

    def decoder(self, in_features: int, output_shape: tuple[int, int, int]) -> nn.Module:
        """(B, in_features) -> (B, C, H, W) logits."""
        ...
