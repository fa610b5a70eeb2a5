"""Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017): relaxed categorical samples, their KL to the uniform
prior in closed form, and the temperature schedule the discrete families (cat_vae, joint_vae) share.

A relaxed sample of logits l at temperature tau is softmax((l + g) / tau), g ~ Gumbel(0, 1) per class: as tau -> 0
it tends to the one-hot of argmax(l + g), a draw from Categorical(softmax(l)) (the Gumbel-max trick); `hard`
returns that one-hot in the forward pass with the relaxed sample's gradient (straight-through).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TINY = 1e-20  # keeps log(-log(u)) finite for u in {0, 1}


def temperature(step: int, initial: float, rate: float, minimum: float) -> float:
    """tau = max(minimum, initial * exp(-rate * step)): PyTorch-VAE's CategoricalVAE schedule (rate 0: constant)."""
    return max(float(minimum), float(initial) * math.exp(-float(rate) * max(int(step), 0)))


def gumbel_softmax(logits: Tensor, tau: float, hard: bool = False) -> Tensor:  # (..., K) -> (..., K)
    """A relaxed one-hot draw per row of logits; hard: the one-hot of its argmax, gradients of the relaxed draw."""
    u = torch.rand_like(logits, dtype=torch.float32)
    gumbel = -torch.log(-torch.log(u + TINY) + TINY)
    soft = F.softmax((logits.float() + gumbel) / tau, dim=-1)
    if not hard:
        return soft.to(logits.dtype)
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return (one_hot + soft - soft.detach()).to(logits.dtype)  # forward: one-hot; backward: d soft


def one_hot_argmax(logits: Tensor) -> Tensor:  # (..., K) -> (..., K): the posterior's mode, a traceable one-hot
    return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)


def categorical_kl_uniform(logits: Tensor) -> Tensor:  # (..., K) -> (...,): KL(Cat(softmax(l)) || Uniform(K))
    """sum_k q_k log q_k + log K, in fp32 (log_softmax keeps q_k log q_k finite where q_k underflows)."""
    log_q = F.log_softmax(logits.float(), dim=-1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])


def uniform_one_hot(n: int, sizes: list[int], device: torch.device) -> Tensor:  # -> (n, sum(sizes))
    """n draws from the uniform prior: one category per variable of each size, one-hot, side by side."""
    parts = [F.one_hot(torch.randint(k, (n,), device=device), k).float() for k in sizes]
    return torch.cat(parts, dim=1) if parts else torch.zeros(n, 0, device=device)


def usage(index: Tensor, k: int) -> Tensor:  # (N,) int64 -> (): e^entropy of the chosen categories (k: all alike)
    counts = torch.bincount(index.flatten(), minlength=k).float()
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-torch.special.xlogy(p, p).sum())
