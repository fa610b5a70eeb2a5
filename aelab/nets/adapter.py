"""Encoders as the families call them, `(x, condition=None)`, from whatever module an `Arch` builds.

An arch may return plain one-input modules (an `nn.Sequential` of your own): conditioning is aelab's job, not
the arch's. A module whose forward takes a second argument (aelab's MLP and conv encoders) receives the
condition itself and is used as it is, so its parameters, its fast paths and its checkpoints' keys are unchanged.
A one-input module is wrapped in `OneInput`: without a condition it sees x alone; with one (a conditional family
that also conditions its encoder) the one-hot label is concatenated to x, which works for vectors (B, D), where
the arch was asked for a module of D + extra inputs, and is refused in one line for images.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from aelab.errors import UserError
from aelab.nets import Arch


def takes_condition(module: nn.Module) -> bool:
    """Whether module's forward accepts a second positional argument (the condition)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a compiled or scripted forward): call it with x alone
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


class OneInput(nn.Module):
    """A one-input module called as `(x, condition=None)`: x alone, or [x, condition] joined along features."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        if condition is None:
            return self.module(x)
        return self.module(torch.cat([x, condition.to(x.dtype)], dim=1))  # (B, D + K)


def build_encoder(arch: Arch, input_shape: tuple[int, ...], out_features: int, extra_features: int = 0, *,
                  family: str = "this model") -> nn.Module:
    """arch's encoder for input_shape [+ extra_features of condition] -> out_features, callable as (x, condition)."""
    module = arch.encoder(input_shape, out_features, extra_features)
    if takes_condition(module):
        return module
    if extra_features and len(input_shape) != 1:
        raise UserError("arch", f"{type(arch).__name__}.encoder returns a module of one input (x), and {family} also "
                        f"conditions its encoder on the class label, which cannot be joined to images "
                        f"{list(input_shape)}", "an encoder whose forward takes (x, condition), "
                        "or model.condition_encoder=false")
    return OneInput(module)
