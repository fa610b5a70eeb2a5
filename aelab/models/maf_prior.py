"""A masked autoregressive flow (Papamakarios et al. 2017) fitted to a trained run's codes: `aelab fit-prior prior=maf`.

Each layer is a MADE (aelab/nets/made.py) giving the Gaussian conditional of every coordinate given the ones
before it, x_i = u_i * exp(alpha_i) + mu_i; scoring runs the other way in one pass, u = (x - mu(x)) * exp(-alpha(x)),
so log p(x) = log N(u_L; 0, I) - sum_layers sum_i alpha_i. Layers alternate the order (natural, reversed), and no
batch normalisation sits between them: the codes are standardised once instead (their mean and std are part of
the density). Sampling inverts each layer in D passes. Fitted by maximum likelihood with Adam; the epoch with the
lowest NLL on held-out (validation) codes is kept. Stored as <run>/priors/maf.pt.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aelab.errors import UserError
from aelab.files import save_torch
from aelab.nets.made import MADE

MIN_CODES = 20  # a tenth set aside to pick the epoch needs a couple of codes, the fit the rest
FORMAT = 1  # bump when the saved fields change
ALPHA_BOUND = 5.0  # log-scales squashed into (-5, 5) nats: a layer cannot blow a code up by e^+-huge early in fitting


class MAFPrior(nn.Module):
    """A density over codes (D,): `layers` MADE layers of `hidden` units over the standardised codes."""

    name = "maf"

    def __init__(self, dim: int, layers: int, hidden: Sequence[int], shift: Tensor | None = None,
                 scale: Tensor | None = None, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.dim, self.layers, self.hidden, self.info = int(dim), int(layers), [int(h) for h in hidden], dict(info or {})
        self.register_buffer("shift", torch.zeros(dim) if shift is None else shift.float())
        self.register_buffer("scale", torch.ones(dim) if scale is None else scale.float())
        self.mades = nn.ModuleList(MADE(self.dim, self.hidden, heads=2, reverse=i % 2 == 1) for i in range(self.layers))

    def _conditionals(self, made: MADE, x: Tensor) -> tuple[Tensor, Tensor]:  # (N, D) -> mu, alpha (N, D)
        mu, alpha = made(x)
        return mu, ALPHA_BOUND * torch.tanh(alpha / ALPHA_BOUND)

    def log_prob_grad(self, z: Tensor) -> Tensor:  # (N, D) -> (N,) nats, differentiable (fitting)
        u = (z - self.shift) / self.scale
        log_det = -self.scale.log().sum().expand(z.shape[0])
        for made in self.mades:
            mu, alpha = self._conditionals(made, u)
            u = (u - mu) * (-alpha).exp()
            log_det = log_det - alpha.sum(-1)
        return -0.5 * (u.pow(2).sum(-1) + self.dim * math.log(2 * math.pi)) + log_det

    @torch.no_grad()
    def log_prob(self, z: Tensor) -> Tensor:  # (N, D) -> (N,) nats
        return self.log_prob_grad(z.to(self.shift))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, D), float32 as fitted
        """n draws; with a generator they are reproducible (the base noise is drawn from it on the CPU)."""
        x = torch.randn(n, self.dim, generator=generator).to(self.shift)
        for made in reversed(self.mades):
            u, x = x, torch.zeros_like(x)
            for _ in range(self.dim):  # pass k fixes the k-th coordinate in the layer's order (its inputs are fixed)
                mu, alpha = self._conditionals(made, x)
                x = u * alpha.exp() + mu
        return x * self.scale + self.shift

    def save(self, path: str | Path) -> Path:
        return save_torch({"format": FORMAT, "name": self.name, "dim": self.dim, "layers": self.layers,
                           "hidden": self.hidden, "state": {k: v.cpu() for k, v in self.state_dict().items()},
                           "info": self.info}, path, "fitted prior")

    @classmethod
    def from_file(cls, path: str | Path, map_location: str | torch.device = "cpu") -> MAFPrior:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT or state.get("name") != cls.name:
            raise UserError("prior", f"{path} was written by another version of aelab", "fit it again: aelab fit-prior")
        prior = cls(state["dim"], state["layers"], state["hidden"], info=state["info"])
        prior.load_state_dict(state["state"])
        return prior.to(map_location).eval()


def fit_maf(codes: Tensor, layers: int = 5, hidden: Sequence[int] = (128, 128), epochs: int = 20,
            batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
            report: Callable[[str], None] | None = None) -> MAFPrior:
    """A MAF fitted by maximum likelihood on codes (N, D). A tenth of them (drawn with the seed) is set aside and the
    epoch with the lowest mean NLL on it is kept, so the caller's validation codes stay unseen by the fit."""
    codes = codes.detach().float().cpu()
    if codes.shape[0] < MIN_CODES:
        raise UserError("max_codes", f"{codes.shape[0]} training codes", f"at least {MIN_CODES} codes to fit a flow to")
    torch.manual_seed(seed)
    order = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = max(1, codes.shape[0] // 10)
    held_out, codes = codes[order[:cut]], codes[order[cut:]]  # (N/10, D) selection codes, (9N/10, D) fitted
    scale = codes.std(0).clamp_min(1e-3)  # a collapsed unit's spread is ~0: a floor keeps the standardisation finite
    prior = MAFPrior(codes.shape[1], layers, hidden, codes.mean(0), scale)
    optimiser = torch.optim.Adam(prior.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch = math.inf, copy.deepcopy(prior.state_dict()), 0
    for epoch in range(1, epochs + 1):
        prior.train()
        for idx in torch.randperm(codes.shape[0], generator=generator).split(batch_size):
            loss = -prior.log_prob_grad(codes[idx]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        prior.eval()
        val = float(-prior.log_prob(held_out).mean())
        if val < best:
            best, best_state, best_epoch = val, copy.deepcopy(prior.state_dict()), epoch
        if report is not None:
            report(f"epoch {epoch}/{epochs}: batch nll {loss.item():.3f}, set-aside nll {val:.3f} nats per code")
    prior.load_state_dict(best_state)
    prior.info.update(codes=int(codes.shape[0] + held_out.shape[0]), layers=layers, hidden=list(hidden), epochs=epochs,
                      best_epoch=best_epoch, selection_nll=best, seed=seed)
    return prior.eval()
