"""Encoder / decoder builders. An arch maps an input shape to networks of any in/out width."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch-free at import: the trainer's schema reads nets.fastpath on the CLI's light path
    from torch import nn


class Arch(Protocol):
    """What `arch._target_` builds. Its modules may be plain one-input modules (an nn.Sequential): conditioning is
    aelab's job (aelab/nets/adapter.py). docs/extending.md shows one."""

    def encoder(self, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0) -> nn.Module:
        """(B, C, H, W) or (B, D) -> (B, out_features). extra_features > 0 only for a family that conditions its
        encoder on the one-hot label: a module whose forward takes (x, condition) gets it as a second input; a
        one-input module gets vectors (B, D + extra_features) with the label joined on (images: refused)."""
        ...

    def decoder(self, in_features: int, output_shape: tuple[int, ...]) -> nn.Module:
        """(B, in_features) -> (B, *output_shape) logits."""
        ...
