"""`arch=burgess_conv`: the conv nets of the disentanglement literature.

Burgess et al. (2018) and disentanglement_lib (Locatello et al. 2019), and after them most dSprites results: four
4x4 stride-2 convs (32, 32, 64, 64 channels) with ReLU and no normalisation, one fully connected layer of 256, then
the code; the decoder mirrors it (256, the last conv's map, four 4x4 stride-2 transposed convs). Unlike `arch=conv`
(3x3 kernels, BatchNorm, LeakyReLU, the course's stack) the statistics of a batch never enter an example's code, so
a code depends on its image alone, as the disentanglement metrics assume. Any image side of at least
2^len(channels) pixels works; odd sides land exactly (each transposed conv adds the pixel its conv dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from aelab.nets.conv import LayoutTuned, _image_shape
from aelab.nets.linear import Linear
from aelab.schema import Annotated, Range


def _halve(n: int) -> int:
    return n // 2  # output of a kernel-4, stride-2, padding-1 conv


def feature_sizes(side: tuple[int, int], layers: int) -> list[tuple[int, int]]:
    """Spatial size before each conv and after the last: [(H, W), (H/2, W/2), ...], rounded down."""
    sizes = [side]
    for _ in range(layers):
        sizes.append((_halve(sizes[-1][0]), _halve(sizes[-1][1])))
    return sizes


class BurgessEncoder(LayoutTuned):
    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int], hidden: int, out_features: int,
                 extra_features: int = 0) -> None:
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c = c_out
        h, w = feature_sizes((h, w), len(channels))[-1]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Sequential(Linear(c * h * w + extra_features, hidden), nn.ReLU(inplace=True))
        self.head = Linear(hidden, out_features)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        h = self.features(x.contiguous(memory_format=self._layout_for(x, extra)))  # (B, C_last * h * w)
        if extra is not None:
            h = torch.cat([h, extra], dim=1)
        return self.head(self.hidden(h))


class BurgessDecoder(LayoutTuned):
    def __init__(self, in_features: int, channels: Sequence[int], hidden: int,
                 output_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c_img, h, w = output_shape
        sizes = feature_sizes((h, w), len(channels))
        self.start = (channels[-1], *sizes[-1])
        self.project = nn.Sequential(Linear(in_features, hidden), nn.ReLU(inplace=True),
                                     Linear(hidden, math.prod(self.start)), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        outs = [*channels[::-1][1:], c_img]
        for i, (c_in, c_out) in enumerate(zip(channels[::-1], outs)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)  # 0, or 1 where the conv dropped an odd pixel
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=pad))
            if i < len(channels) - 1:  # logits out of the last layer
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        start = self.project(z).view(-1, *self.start).contiguous(memory_format=self._layout_for(z))
        return self.net(start).contiguous()  # (B, C, H, W), in the ordinary layout for the losses


class BurgessConvArch:
    """`arch=burgess_conv`: convs of 4x4, stride 2, one per entry of channels (32-32-64-64), ReLU, FC `hidden`."""

    def __init__(self, channels: Annotated[Sequence[int], Range(1, None)] = (32, 32, 64, 64),
                 hidden: Annotated[int, Range(1, None)] = 256) -> None:
        from aelab.errors import UserError

        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise UserError("arch.channels", f"got {list(channels)}", "a non-empty list of positive integers")
        self.channels, self.hidden = list(channels), int(hidden)

    def _shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        from aelab.errors import UserError

        image = _image_shape(shape)
        least = 2 ** len(self.channels)
        if min(image[1:]) < least:
            raise UserError("arch.channels", f"{len(self.channels)} stride-2 convs need images of at least {least} "
                            f"pixels a side, the data's are {image[1]}x{image[2]}", "fewer entries, or arch=conv")
        return image

    def encoder(self, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0) -> nn.Module:
        return BurgessEncoder(self._shape(input_shape), self.channels, self.hidden, out_features, extra_features)

    def decoder(self, in_features: int, output_shape: tuple[int, ...]) -> nn.Module:
        return BurgessDecoder(in_features, self.channels, self.hidden, self._shape(output_shape))
