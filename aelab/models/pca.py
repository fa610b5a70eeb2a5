"""PCA, the linear baseline: fitted in closed form on the training split, no gradient descent.

It has the same encode / decode interface as the neural families, so every view and command works on it.
decode returns the likelihood's logits of the linear reconstruction (clipped into (0, 1) for Bernoulli data),
so its `recon` term is the same loss the neural families report at the same latent_dim.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from aelab.data.base import Batch, Split
from aelab.errors import UserError
from aelab.models.base import Autoencoder, Diagnostics, Phase
from aelab.models.likelihoods import LIKELIHOODS
from aelab.nets import Arch
from aelab.schema import Annotated, OneOf, Range


class PCA(Autoencoder):
    """latent_dim components, or with `variance` the fewest that keep that fraction of the variance (the arch is unused)."""
    directions = {"explained_variance": "max", "components": None}

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], latent_dim: Annotated[int, Range(1, None)],
                 variance: Annotated[float | None, Range(0, 1, low_open=True)] = None,
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "bernoulli", input_noise: Annotated[float, Range(0, None)] = 0.0,
                 num_classes: int | None = None) -> None:
        super().__init__(arch, input_shape, latent_dim, likelihood, input_noise, num_classes)
        d = math.prod(self.input_shape)
        if variance is None and self.latent_dim > d:
            raise UserError("latent_dim", f"pca keeps at most {d} components (the input size), got {self.latent_dim}",
                            f"latent_dim <= {d}, or model.variance=0.9")
        self.variance = None if variance is None else float(variance)
        k = min(self.latent_dim, d)  # until fitted: the first k coordinate axes
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.eye(k, d))  # (k, d) orthonormal rows
        self.register_buffer("explained", torch.zeros(k))  # fraction of the variance each component keeps

    def phases(self) -> list[Phase]:
        return []  # nothing to optimise

    @torch.no_grad()
    def fit_closed_form(self, train: Split, batch_size: int = 1024) -> None:
        """Mean and covariance of the training split in float64 (one pass, batched), then its eigenvectors."""
        d = self.mean.numel()
        n, total, outer = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
        for batch in train.batches(batch_size):
            x = batch.x.flatten(1).to("cpu", torch.float64)  # (B, d)
            n, total, outer = n + len(x), total + x.sum(0), outer + x.T @ x
        if n < 2:
            raise UserError("data", f"pca needs at least 2 training examples, got {n}")
        mean = total / n
        cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
        ratio = eigenvalues / eigenvalues.sum().clamp_min(1e-12)
        if self.variance is None:
            k = self.latent_dim
        else:  # the fewest components whose cumulative share reaches `variance`
            k = int((ratio.cumsum(0) < self.variance - 1e-9).sum()) + 1
        k = min(k, d)
        device = self.mean.device
        self.mean = mean.float().to(device)
        self.components = eigenvectors[:, :k].T.contiguous().float().to(device)
        self.explained = ratio[:k].float().to(device)
        self.latent_dim = k

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # (B, k)
        return (x.flatten(1).float() - self.mean) @ self.components.T

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:  # (B, *input_shape) logits
        linear = z.float() @ self.components + self.mean
        return self.likelihood.logits_of(linear.view(-1, *self.input_shape))

    def losses(self, batch: Batch, step: int) -> dict[str, Tensor]:
        logits = self.decode(self.encode(self.corrupt(batch.x)))
        return {"recon": self.likelihood.batch_nll(logits, batch.x)}

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> Diagnostics:
        out = super().diagnostics(batch)
        out.scalars["explained_variance"] = float(self.explained.sum())
        out.scalars["components"] = float(self.latent_dim)
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The number of components is chosen by the fit (model.variance): take the stored buffers' sizes.
        for name in ("mean", "components", "explained"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(stored, device=self.mean.device))
        self.latent_dim = self.components.shape[0]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
