"""Keep torch.compile's machinery out of runs that never compile.

Two things in torch.optim import torch._dynamo (1.8 s on 2 cores: a third of aelab's launch to first
training step) only to talk to the compiler, which an eager run never starts:

- a few Optimizer methods (add_param_group, zero_grad, state_dict, load_state_dict) are wrapped by
  torch._disable_dynamo, which imports it on their first call to mark them "do not compile". The
  wrapper caches what it calls in the attribute `__dynamo_disable` of the original; pre-filling that
  cache with the original makes it call the original straight away, which is what the disabled
  function does in eager mode;
- every built-in optimizer's step is wrapped by _use_grad_for_differentiable, which imports it to call
  torch._dynamo.graph_break() (a no-op outside compilation) around `step` run under
  set_grad_enabled(differentiable). eager_step gives one optimizer instance the same step (the same
  hooks and profiler record through Optimizer.profile_hook_step, the same grad mode) without it.

A run that compiles (trainer.compile=true) imports torch._dynamo anyway and is left alone; its
compiled region is the loss computation, which never calls these methods.
"""

from __future__ import annotations

import functools
import types

import torch

_CACHE_ATTR = "__dynamo_disable"  # the attribute torch/_compile.py's _disable_dynamo caches its wrapper in
_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def skip_dynamo_import() -> list[str]:
    """Pre-fill torch's lazy disable cache of the Optimizer methods above; returns the names patched
    (none where a future torch wraps them differently: then the import simply happens as before)."""
    patched = []
    for name in _METHODS:
        wrapper = getattr(torch.optim.Optimizer, name, None)
        original = getattr(wrapper, "__wrapped__", None)
        code = getattr(wrapper, "__code__", None)
        if original is None or code is None or not code.co_filename.endswith("_compile.py"):
            continue  # not (or no longer) torch's lazy _disable_dynamo wrapper
        if getattr(original, _CACHE_ATTR, None) is None:
            setattr(original, _CACHE_ATTR, original)
        patched.append(name)
    return patched


def eager_step(optimizer: torch.optim.Optimizer) -> bool:
    """Give `optimizer` a step that does not import torch._dynamo (see the module docstring); False, and
    nothing changed, where its class's step is not the wrapping this knows or it is differentiable."""
    hooked = type(optimizer).step  # Optimizer.profile_hook_step(_use_grad(raw step))
    use_grad = getattr(hooked, "__wrapped__", None)
    raw = getattr(use_grad, "__wrapped__", None)
    if raw is None or getattr(use_grad, "__code__", None) is None or use_grad.__code__.co_name != "_use_grad" \
            or optimizer.defaults.get("differentiable"):
        return False

    @functools.wraps(raw)
    def no_grad_step(self: torch.optim.Optimizer, *args, **kwargs):
        with torch.no_grad():  # what _use_grad sets for a non-differentiable optimizer
            return raw(self, *args, **kwargs)

    optimizer.step = types.MethodType(torch.optim.Optimizer.profile_hook_step(no_grad_step), optimizer)
    return True
