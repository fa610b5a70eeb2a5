"""Fully connected encoders and decoders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from aelab.nets.linear import Linear
from aelab.schema import Annotated, OneOf, Range

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
}


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers between consecutive sizes, activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: Sequence[int], out_features: int,
                 activation: str, extra_features: int = 0) -> None:
        super().__init__()
        self.net = mlp([math.prod(input_shape) + extra_features, *hidden, out_features], activation)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        h = x.flatten(1)  # (B, C*H*W) or (B, D)
        if extra is not None:
            h = torch.cat([h, extra], dim=1)
        return self.net(h)


class MLPDecoder(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], output_shape: tuple[int, ...],
                 activation: str) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([in_features, *hidden, math.prod(output_shape)], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.output_shape)  # (B, C, H, W) or (B, D)


class MLPArch:
    """`arch=mlp`: hidden sizes for the encoder; the decoder mirrors them unless given its own
    (`decoder_hidden`, `decoder_activation`: Chen et al.'s dSprites decoder is three tanh layers of 1,200 behind a
    ReLU encoder of two)."""

    def __init__(self, hidden: Annotated[Sequence[int], Range(1, None)] = (512, 256),
                 activation: Annotated[str, OneOf(ACTIVATIONS)] = "relu",
                 decoder_hidden: Annotated[Sequence[int] | None, Range(1, None)] = None,
                 decoder_activation: Annotated[str | None, OneOf(ACTIVATIONS)] = None) -> None:
        from aelab.errors import UserError

        for key, value in (("arch.activation", activation), ("arch.decoder_activation", decoder_activation)):
            if value is not None and value not in ACTIVATIONS:
                raise UserError(key, f"unknown value {value!r}", "one of: " + ", ".join(ACTIVATIONS))
        for key, sizes in (("arch.hidden", hidden), ("arch.decoder_hidden", decoder_hidden)):
            if sizes is not None and any(not isinstance(h, int) or h < 1 for h in sizes):
                raise UserError(key, f"got {list(sizes)}", "a list of positive integers")
        self.hidden, self.activation = list(hidden), activation
        self.decoder_hidden = list(hidden[::-1] if decoder_hidden is None else decoder_hidden)
        self.decoder_activation = decoder_activation or activation

    def encoder(self, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0) -> nn.Module:
        return MLPEncoder(input_shape, self.hidden, out_features, self.activation, extra_features)

    def decoder(self, in_features: int, output_shape: tuple[int, ...]) -> nn.Module:
        return MLPDecoder(in_features, self.decoder_hidden, output_shape, self.decoder_activation)
