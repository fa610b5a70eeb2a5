"""Densities fitted to a trained model's codes after training (the two-stage idea; Ghosh et al. 2020).

A family without a prior (ae, rae), or one whose codes do not fill its prior (wae, a VAE's aggregate
posterior), gets a sampler by fitting a density to the codes of its training split: decode its draws.
`fit_gmm` fits a Gaussian mixture (scikit-learn); the result is a small torch module stored in the run
as <run>/priors/<name>.pt and read back with `load_fitted_prior`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aelab.errors import UserError
from aelab.files import save_torch

FITTED_PRIORS = ("gmm", "maf", "pixelcnn")  # the densities `aelab fit-prior prior=` fits (the one place a new one is added)
# what `aelab sample prior=` and eval's `generation.prior=` draw from: auto (a fitted density stored in the run,
# else the model's prior, else for sample a Gaussian fitted to the training codes), the model's own prior, a
# fitted density, or that Gaussian
SAMPLE_PRIORS = ("auto", "model", *FITTED_PRIORS, "gaussian")
PRIORS_DIR = "priors"  # <run>/priors/<name>.pt
FORMAT = 1  # bump when the saved fields change


class FittedPrior(nn.Module):
    """A Gaussian mixture over codes: weights (K,), means (K, D), Cholesky factors of the covariances (K, D, D).

    One component is the single fitted Gaussian; `info` records how it was fitted (checkpoint, counts).
    """

    def __init__(self, weights: Tensor, means: Tensor, scale_tril: Tensor, name: str = "gmm",
                 info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.name, self.info = name, dict(info or {})
        self.register_buffer("weights", weights.double())
        self.register_buffer("means", means.double())
        self.register_buffer("scale_tril", scale_tril.double())

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def distribution(self) -> torch.distributions.MixtureSameFamily:
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=self.weights),
            torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale_tril))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, D) float32
        """n draws; with a generator they are reproducible (components, then Gaussian noise, from it)."""
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.dim, 1, dtype=torch.float64, generator=generator)
        z = self.means.cpu()[k] + (self.scale_tril.cpu()[k] @ eps).squeeze(-1)  # (n, D)
        return z.float().to(self.means.device)

    @torch.no_grad()
    def log_prob(self, z: Tensor) -> Tensor:  # (N, D) -> (N,) nats
        return self.distribution().log_prob(z.to(self.means.device).double())

    def save(self, path: str | Path) -> Path:
        return save_torch({"format": FORMAT, "name": self.name, "weights": self.weights.cpu(), "means": self.means.cpu(),
                           "scale_tril": self.scale_tril.cpu(), "info": self.info}, path, "fitted prior")

    @classmethod
    def from_file(cls, path: str | Path) -> FittedPrior:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise UserError("prior", f"{path} was written by another version of aelab", "fit it again: aelab fit-prior")
        return cls(state["weights"], state["means"], state["scale_tril"], state["name"], state["info"])


def prior_path(run_dir: str | Path, name: str = "gmm") -> Path:
    return Path(run_dir) / PRIORS_DIR / f"{name}.pt"


def load_fitted_prior(run_dir: str | Path, name: str = "gmm") -> FittedPrior | None:
    """The density `aelab fit-prior` stored in the run, or None if it has none of that name."""
    path = prior_path(run_dir, name)
    return FittedPrior.from_file(path) if path.is_file() else None


def fit_gmm(codes: Tensor, components: int, seed: int = 0, max_iter: int = 200) -> FittedPrior:
    """A full-covariance Gaussian mixture fitted by EM (scikit-learn) to codes (N, D)."""
    from sklearn.mixture import GaussianMixture

    codes = codes.detach().double().cpu()
    if components < 1:
        raise UserError("components", f"got {components}", "an integer >= 1")
    if codes.shape[0] < 2 * components:
        raise UserError("components", f"{components} components for {codes.shape[0]} codes",
                        f"at most {codes.shape[0] // 2} (two codes per component)")
    # reg_covar keeps a component on a flat stretch of codes (e.g. collapsed VAE units) invertible
    gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-6, max_iter=max_iter, random_state=seed)
    gmm.fit(codes.numpy())
    info = {"components": components, "codes": int(codes.shape[0]), "seed": seed, "converged": bool(gmm.converged_),
            "iterations": int(gmm.n_iter_)}
    return FittedPrior(torch.from_numpy(gmm.weights_), torch.from_numpy(gmm.means_),
                       torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)), "gmm", info)


def fit_gaussian(codes: Tensor) -> FittedPrior:
    """The single Gaussian (one component: the codes' mean and covariance), the baseline a mixture must beat."""
    codes = codes.detach().double().cpu()
    cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1]) + 1e-6 * torch.eye(codes.shape[1])
    return FittedPrior(torch.ones(1), codes.mean(0, keepdim=True), torch.linalg.cholesky(cov)[None], "gaussian",
                       {"components": 1, "codes": int(codes.shape[0])})


@torch.no_grad()
def training_codes(model, split, limit: int | None = None, batch_size: int = 1024, seed: int = 0) -> Tensor:
    """Codes (N, D) of a split on the CPU: one draw of q(z|x) per example for families with a Gaussian posterior
    (their aggregate posterior, which is what the decoder saw in training), the deterministic code otherwise.
    A family whose q(z|x) is not the Gaussian posterior() alone (a flow on top, vae_iaf) maps the noise itself
    with posterior_draw(x, y, eps)."""
    generator = torch.Generator().manual_seed(seed)
    out, seen = [], 0
    own_draw = getattr(model, "posterior_draw", None)
    for batch in split.batches(batch_size):
        if model.has_posterior:
            mu, logvar = model.posterior(batch.x, batch.y)
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)
            z = mu + eps * (0.5 * logvar).exp() if own_draw is None else own_draw(batch.x, batch.y, eps)
        else:
            z = model.encode(batch.x, batch.y)
        out.append(z.float().cpu())
        seen += len(z)
        if limit is not None and seen >= limit:
            break
    codes = torch.cat(out)
    return codes if limit is None else codes[:limit]


def mean_nll(prior: FittedPrior, codes: Tensor) -> float:
    """Average negative log-density (nats per code) of held-out codes: lower is a better fit."""
    return float(-prior.log_prob(codes).mean())
