"""The course's convolutional stack: stride-2 conv + BatchNorm + LeakyReLU, mirrored by transposed convs."""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from aelab.nets.fastpath import FAST_PATHS, probe
from aelab.nets.linear import Linear
from aelab.schema import Annotated, Range

# oneDNN's convolutions work in NHWC: with NCHW tensors every conv pays a layout reorder each way, which
# made channels-last the faster layout where it was measured. Whether it is depends on the CPU (or GPU),
# the precision and the sizes, so the layout is timed (fast path conv_layout) on the first batch a
# stack sees. Only the layout changes (shapes, parameters and checkpoints are the same).
CHANNELS_LAST = torch.channels_last
PROBE_ROWS = 32  # images a layout is timed on


class LayoutTuned(nn.Module):
    """A conv stack that keeps its parameters and activations in the memory layout timed fastest for it."""

    layout: torch.memory_format | None = None  # chosen on the first forward

    def _layout_for(self, x: Tensor, *extra: Tensor | None) -> torch.memory_format:
        if self.layout is None:
            self._choose_layout(x, extra)
        return self.layout

    # eager even where trainer.compile=true traces the first forward: a timing and a move of the parameters
    @torch.compiler.disable
    def _choose_layout(self, x: Tensor, extra: tuple[Tensor | None, ...]) -> None:
        self.layout = CHANNELS_LAST if _channels_last_is_faster(self, x, extra) else torch.contiguous_format
        self.to(memory_format=self.layout)  # in place: optimizers keep their references


def _channels_last_is_faster(stack: LayoutTuned, x: Tensor, extra: tuple[Tensor | None, ...]) -> bool:
    """A stack keeps the layout of its first forward for good, so the choice must not depend on what that forward
    was: a trained model's first call is a training step, the same model reopened by `aelab eval` first encodes an
    evaluation batch. The key is therefore the stack and one example's shape (not the batch size, nor whether
    gradients are on, nor the precision: a bf16-trained run's first forward is under autocast, its reopening's in
    fp32), timed on PROBE_ROWS examples with the backward pass where the stack has trainable parameters: trained
    and reopened, a model computes in the same layout (bit for bit)."""
    backward = any(p.requires_grad for p in stack.parameters())
    shapes = ",".join("x".join(map(str, p.shape)) for p in stack.parameters())
    key = (f"{type(stack).__name__} {'x'.join(map(str, x.shape[1:]))} {x.device.type} "
           f"params {zlib.crc32(shapes.encode()):08x}{' train' if backward else ''}")

    def candidates():
        rows = PROBE_ROWS  # the layouts' relative speed, at a fraction of a full batch's time
        probe_x = probe(rows, *x.shape[1:], like=x)
        probe_extra = tuple(None if e is None else probe(rows, *e.shape[1:], like=e) for e in extra)
        copies = {}
        for fmt in (CHANNELS_LAST, torch.contiguous_format):  # timed on copies: the real stack's state is untouched
            twin = copy.deepcopy(stack)
            twin.layout = fmt
            copies[fmt] = twin.to(memory_format=fmt)

        def run(fmt: torch.memory_format) -> None:  # under the caller's autocast, as the real step runs
            with torch.set_grad_enabled(backward):
                out = copies[fmt](probe_x, *probe_extra)
                if backward:
                    out.float().sum().backward()
                    copies[fmt].zero_grad(set_to_none=True)

        sync = torch.cuda.synchronize if x.device.type == "cuda" else None
        return lambda: run(CHANNELS_LAST), lambda: run(torch.contiguous_format), sync

    return FAST_PATHS.choose("conv_layout", key, candidates)


def _halve(n: int) -> int:
    return (n - 1) // 2 + 1  # output of a kernel-3, stride-2, padding-1 conv


def conv_block(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(slope, inplace=True))


class ConvEncoder(LayoutTuned):
    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int], out_features: int,
                 slope: float, extra_features: int = 0) -> None:
        super().__init__()
        c, h, w = input_shape
        blocks = []
        for c_out in channels:
            blocks.append(conv_block(c, c_out, slope))
            c, h, w = c_out, _halve(h), _halve(w)
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.head = Linear(c * h * w + extra_features, out_features)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        h = self.features(x.contiguous(memory_format=self._layout_for(x, extra)))  # (B, C_last * h * w)
        if extra is not None:
            h = torch.cat([h, extra], dim=1)
        return self.head(h)


class ConvDecoder(LayoutTuned):
    def __init__(self, in_features: int, channels: Sequence[int], output_shape: tuple[int, int, int],
                 slope: float) -> None:
        super().__init__()
        c_img, h, w = output_shape
        sizes = [(h, w)]  # spatial size before each encoder block, so the decoder lands exactly
        for _ in channels:
            sizes.append((_halve(sizes[-1][0]), _halve(sizes[-1][1])))
        self.start = (channels[-1], *sizes[-1])
        self.project = nn.Sequential(Linear(in_features, math.prod(self.start)), nn.LeakyReLU(slope))
        layers: list[nn.Module] = []
        outs = [*channels[::-1][1:], c_img]
        for i, (c_in, c_out) in enumerate(zip(channels[::-1], outs)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))  # 0 or 1: hit odd and even sizes
            last = i == len(channels) - 1
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad, bias=last))
            if not last:  # logits out of the last layer: no norm, no activation
                layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(slope, inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        start = self.project(z).view(-1, *self.start).contiguous(memory_format=self._layout_for(z))
        return self.net(start).contiguous()  # (B, C, H, W), in the ordinary layout for the losses


class ConvArch:
    """`arch=conv`: one stride-2 block per entry of channels (32-64-128-256 in the course)."""

    @classmethod
    def check_options(cls, options: dict, key: str) -> None:
        from aelab.errors import UserError

        if not options.get("channels"):
            raise UserError(f"{key}.channels", "empty", "a non-empty list of positive integers, e.g. [32,64]")

    def __init__(self, channels: Annotated[Sequence[int], Range(1, None)] = (32, 64, 128, 256),
                 negative_slope: Annotated[float, Range(0, 1)] = 0.2) -> None:
        from aelab.errors import UserError

        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise UserError("arch.channels", f"got {list(channels)}", "a non-empty list of positive integers")
        self.channels, self.slope = list(channels), float(negative_slope)

    def encoder(self, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0) -> nn.Module:
        return ConvEncoder(_image_shape(input_shape), self.channels, out_features, self.slope, extra_features)

    def decoder(self, in_features: int, output_shape: tuple[int, ...]) -> nn.Module:
        return ConvDecoder(in_features, self.channels, _image_shape(output_shape), self.slope)


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    from aelab.errors import UserError

    if len(shape) != 3:
        raise UserError("arch", f"conv needs images (C, H, W), the data's examples are vectors of shape {list(shape)}",
                        "arch=mlp")
    return shape  # type: ignore[return-value]


# ---- spatial code grids (vq_vae) --------------------------------------------------------------
# The same stacks as ConvEncoder / ConvDecoder, but the code stays a grid of vectors: the encoder ends in a
# 1x1 conv to `depth` channels per cell instead of flattening into a linear head, and the decoder starts from
# that grid with a 1x1 conv instead of a linear projection. The classes above are untouched.


def code_grid(input_shape: tuple[int, ...], channels: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the feature map the conv stack makes of an image: one halving per block."""
    _, h, w = _image_shape(input_shape)
    for _ in channels:
        h, w = _halve(h), _halve(w)
    return h, w


class ConvGridEncoder(LayoutTuned):
    """(B, C, H, W) -> (B, depth, h, w): the conv stack, then a 1x1 conv to `depth` channels per cell."""

    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int], depth: int, slope: float) -> None:
        super().__init__()
        stack = ConvEncoder(input_shape, channels, 1, slope)  # its blocks; its flattening linear head is dropped
        self.features = nn.Sequential(*list(stack.features)[:-1])
        self.head = nn.Conv2d(channels[-1], depth, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.contiguous(memory_format=self._layout_for(x)))).contiguous()  # (B, depth, h, w)


class ConvGridDecoder(LayoutTuned):
    """(B, depth, h, w) -> (B, C, H, W) logits: a 1x1 conv to the last block's channels, then the transposed convs."""

    def __init__(self, depth: int, channels: Sequence[int], output_shape: tuple[int, int, int], slope: float) -> None:
        super().__init__()
        stack = ConvDecoder(1, channels, output_shape, slope)  # its transposed convs; its linear projection is dropped
        self.project = nn.Sequential(nn.Conv2d(depth, channels[-1], 1), nn.LeakyReLU(slope))
        self.net = stack.net

    def forward(self, grid: Tensor) -> Tensor:
        return self.net(self.project(grid.contiguous(memory_format=self._layout_for(grid)))).contiguous()  # (B, C, H, W)


def grid_nets(arch: ConvArch, input_shape: tuple[int, ...], depth: int) -> tuple[nn.Module, nn.Module]:
    """The grid-keeping encoder and decoder of a conv arch for images of input_shape."""
    shape = _image_shape(input_shape)
    return (ConvGridEncoder(shape, arch.channels, depth, arch.slope),
            ConvGridDecoder(depth, arch.channels, shape, arch.slope))
