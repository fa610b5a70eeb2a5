"""Mixed precision on the CPU: bf16 autocast where the processor has bf16 dot products and it pays for this model.

A CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm) runs bf16 matmuls at about twice its fp32 rate:
400 against 190 GFLOP/s at the MLP VAE's 128x784x512 shapes on a 2-core AMD EPYC. Whether a whole training step
gains depends on how much of it is matmul, so `trainer.precision=auto` times the run's own training step (every
phase's forward, backward and update, on the first training batch) both ways, as the other fast paths time theirs
(the `cpu_bf16` path of aelab/nets/fastpath.py): cached per machine, recorded with the run, adopted on resume. The
update belongs in the timing: it streams the parameters and Adam's moments through the caches, so that the next
step's casts of the weights to bf16 read memory, where forward and backward alone would find them cache-hot (on
the MLP VAE, autocast timed 3-8% faster than the bf16 matmuls below without the update, and trains 5-10% slower).
Each measurement runs ~100 ms of one way's steps in a row, as training does (shorter blocks, alternating, measured
the two ways closer than training finds them), and the timing leaves no trace.

What runs in bf16 is the networks' layers; their outputs come back to fp32 (`keep_outputs_fp32`) and the losses
are computed in fp32, with the expansions that cancel held in fp32 under autocast (aelab/nets/precision.py). So a
bf16 run reports the same losses as an fp32 one to well inside a seed's spread (scripts/bench_peer.py compares
the test losses, tests/test_precision.py trains both ways).

Where autocast wins, a second timing (the `bf16_matmul` path) asks whether the step is faster still in fp32 with
oneDNN rounding only the matmuls' operands to bf16 (aelab/nets/precision.py's `bf16_matmuls`): the MLP VAE's is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from aelab.nets.fastpath import FAST_PATHS, TimingPlan, rows_bucket
from aelab.nets.precision import exact_blocks_entered

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX-BF16; Arm's BF16 extension


def cpu_has_bf16_dot(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the processor computes bf16 dot products natively (elsewhere oneDNN emulates them, slower than fp32)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return any(flag in line.split(":", 1)[1].split() for flag in BF16_FLAGS)
    except OSError:
        pass
    return False


def step_key(model: nn.Module, rows: int) -> str:
    """What the choice depends on: the family, the size of its networks and the batch. ("train step": timed with the
    optimizer's update; choices timed without it, under the key "... train", are not reused.)"""
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} {params} params x{rows_bucket(rows)} train step"


Loss = Callable[[], dict[str, Tensor]]
Step = Callable[[str], None]  # one training step of the run, computed the named way: "fp32", "autocast" or "matmuls"
# each measurement runs one way's steps in a row for ~100 ms (at most 30 steps: 30 of the MLP VAE's), as many rounds
# as fit in a second (5 of the MLP VAE's: 3 were not enough to tell its two bf16 ways apart every time)
STEP_TIMING = TimingPlan(min_seconds=0.1, budget_seconds=1.0, max_reps=30)


def choose_cpu_bf16(model: nn.Module, step: Step, rows: int, optimizers: Sequence[torch.optim.Optimizer] = ()
                    ) -> bool:
    """Whether this run trains with bf16 autocast on the CPU (the `cpu_bf16` fast path: timed, cached, recorded).
    `step` runs the run's own training step; `optimizers` are those it updates (their state is put back)."""
    return _choose_step("cpu_bf16", model, lambda: (lambda: step("autocast"), lambda: step("fp32"), None), rows,
                        optimizers)


def choose_bf16_matmuls(model: nn.Module, step: Step, rows: int, optimizers: Sequence[torch.optim.Optimizer] = ()
                        ) -> bool:
    """Where bf16 pays: whether the step runs in fp32 with oneDNN's bf16 matmuls instead of under autocast (the
    `bf16_matmul` fast path). Autocast casts every weight to bf16 in the forward and every weight gradient back in
    the backward, kernels of their own that stream the weights through memory twice more; oneDNN rounds operands
    as it packs them anyway. Which is faster depends on the model: matmul-bound MLPs gain, convolutions (left in
    exact fp32 by the matmul setting) lose."""
    return _choose_step("bf16_matmul", model, lambda: (lambda: step("matmuls"), lambda: step("autocast"), None), rows,
                        optimizers)


def step_has_exact_blocks(model: nn.Module, loss: Loss) -> bool:
    """Whether this model's training step enters full_precision() (MMD distances, mixture densities, VQ look-ups,
    covariances): one forward pass, leaving no trace. Such a step keeps autocast (see exact_blocks_entered)."""
    before = exact_blocks_entered()
    with _no_trace(model), torch.no_grad():
        loss()
    return exact_blocks_entered() > before


def _choose_step(path: str, model: nn.Module, candidates: Callable[[], tuple], rows: int,
                 optimizers: Sequence[torch.optim.Optimizer]) -> bool:
    """A choice between two ways of this model's training step, timed on the step itself."""
    key = step_key(model, rows)
    if FAST_PATHS.known(path, key) is None:
        with _no_trace(model, optimizers):
            FAST_PATHS.choose(path, key, candidates, plan=STEP_TIMING)
    return bool(FAST_PATHS.known(path, key))


@contextlib.contextmanager
def _no_trace(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer] = ()) -> Iterator[None]:
    """Steps run to time or inspect the model leave no trace: the random state is restored, buffers (BatchNorm
    statistics, EMA codebooks) are put back and gradients too, and so are the parameters and the optimizers' states
    where the steps update them, so a run that times draws and computes exactly as one that read the cache. The
    networks hand back fp32 outputs meanwhile, as under the run's autocast."""
    hooks = keep_outputs_fp32(model)
    saved = [b.detach().clone() for b in model.buffers()]
    grads = [p.grad for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()] if optimizers else []
    states = [{p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
               for p, state in optimizer.state.items()} for optimizer in optimizers]
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        for buffer, value in zip(model.buffers(), saved):
            buffer.copy_(value)
        with torch.no_grad():
            for p, value in zip(model.parameters(), params):
                p.copy_(value)
        for optimizer, state in zip(optimizers, states):
            optimizer.state.clear()  # moments the timed steps made (the first step's) were not there before
            optimizer.state.update(state)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for h in hooks:
            h.remove()


def _to_fp32(module: nn.Module, inputs: tuple, output):
    if isinstance(output, Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, tuple):
        return tuple(_to_fp32(module, inputs, o) for o in output)
    return output


def keep_outputs_fp32(model: nn.Module) -> list:
    """Forward hooks on the model's networks (its direct submodules) that return their floating outputs in fp32:
    under autocast the layers compute in bf16 and the family's losses in fp32, whatever arch built the nets."""
    return [child.register_forward_hook(_to_fp32) for child in model.children()]
