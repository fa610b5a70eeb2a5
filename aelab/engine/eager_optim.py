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

Fused Adam and AdamW (what the trainer asks for) get a leaner step still: the same two kernels torch's
_fused_adam runs (the step counters' +1, then torch._fused_adam_ or _fused_adamw_ with the group's settings),
called on lists read from the optimizer's own state, without the Python torch puts around them (state
checks, the per-step grouping by device and dtype, the profiler record and the hook dispatch). On the
benchmark's MLP VAE (2 CPU cores) the step alone takes 370-405 us instead of 486-543 (the kernels ~330 us); in
the training step that is 0.05-0.1 ms of ~3.7 ms, about 2% (docs/benchmark.md). It is taken only where
nothing it leaves out could matter: no closure, no step hooks (the optimizer's or global), no profiler
running, no gradient scaler's tensors, every group without amsgrad or maximize, with float hyperparameters
and one device and dtype, and the state of every parameter with a gradient already made (the first step,
and the first after a parameter gets its first gradient, go through torch's own step, which makes it).
Everything else goes through torch's step; the results are bit for bit the same (tests/test_startup.py).
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

    hooked = torch.optim.Optimizer.profile_hook_step(no_grad_step)
    optimizer.step = types.MethodType(lean_fused_adam_step(hooked) if _lean_applies(optimizer) else hooked, optimizer)
    return True


def _lean_applies(optimizer: torch.optim.Optimizer) -> bool:
    """Fused Adam or AdamW (exactly those classes: a subclass may change step), neither capturable nor
    differentiable. (Fused Adam refuses parameters that are not floating point when it is made; a group of several
    devices or dtypes is handed to torch's step at each step.)"""
    return type(optimizer) in (torch.optim.Adam, torch.optim.AdamW) and all(
        group.get("fused") and not group.get("capturable") and not group.get("differentiable")
        for group in optimizer.param_groups)


def _no_hooks(optimizer: torch.optim.Optimizer) -> bool:
    from torch.optim import optimizer as module

    return not (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or module._global_optimizer_pre_hooks or module._global_optimizer_post_hooks)


def lean_fused_adam_step(hooked):
    """A step for fused Adam/AdamW that calls the kernels directly where it can (see the module docstring)."""

    def step(self: torch.optim.Optimizer, *args, **kwargs):
        if (args or kwargs or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None or torch.autograd._profiler_enabled()
                or not _no_hooks(self)):
            return hooked(self, *args, **kwargs)
        calls = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state.get(p) for p in params]
            if (group["amsgrad"] or group["maximize"]
                    or any(isinstance(v, torch.Tensor) for v in (group["lr"], *group["betas"]))
                    or any(not state for state in states)
                    or len({(p.device, p.dtype) for p in params}) > 1):  # torch groups these (CUDA's kernel needs it)
                return hooked(self)  # torch's own step: it makes missing state, and knows every option
            calls.append((params, states, group))
        with torch.no_grad():
            for params, states, group in calls:
                steps = [state["step"] for state in states]
                torch._foreach_add_(steps, 1)
                kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
                kernel(params, [p.grad for p in params], [state["exp_avg"] for state in states],
                       [state["exp_avg_sq"] for state in states], [], steps, amsgrad=False, lr=group["lr"],
                       beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=group["weight_decay"],
                       eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)
        return None

    return functools.wraps(hooked)(step)
