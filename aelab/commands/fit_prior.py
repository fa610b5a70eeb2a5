"""`aelab fit-prior run=<dir> prior=gmm components=10`: fit a density to a run's training codes, store it in the run.

The fitting lives in aelab/models/ (fitted_prior.py: gmm, maf_prior.py, pixelcnn_prior.py); this command loads
the run, encodes its training split, fits, writes <run>/priors/<prior>.pt and reports how well the density fits
held-out (validation) codes next to the single fitted Gaussian `aelab sample` uses for families without a prior.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.results import print_results
from aelab.commands.session import RunSession, open_run
from aelab.config_check import check_fit_prior
from aelab.errors import UserError


def run(cfg: DictConfig) -> dict[str, Any]:
    check_fit_prior(cfg)
    with open_run(cfg, "fit_prior") as session:
        results = FITTERS[str(cfg.prior)](cfg, session)
        session.out.metrics(results)
        print_results(f"fit-prior: {cfg.prior} on {results['codes']} training codes", results, session.out.dir)
    return {**results, "output_dir": str(session.out.dir)}


def _continuous_codes(cfg: DictConfig, session: RunSession):
    """The training codes (N, D) a density over continuous codes is fitted to; a codebook's indices are refused."""
    from aelab.models.fitted_prior import training_codes

    model = session.model
    if hasattr(model, "code_indices"):
        raise UserError("prior", f"{type(model).__name__} codes are indices into a codebook, not continuous",
                        "prior=pixelcnn")
    limit = None if cfg.max_codes is None else int(cfg.max_codes)
    return training_codes(model, session.data.train, limit, seed=int(cfg.seed))


def _held_out(cfg: DictConfig, session: RunSession, prior, codes, name: str) -> dict[str, Any]:
    """Saves the fitted density in the run; its NLL on validation codes beside the single fitted Gaussian's."""
    from aelab.models.fitted_prior import fit_gaussian, mean_nll, prior_path, training_codes

    prior.info.update(checkpoint=str(cfg.ckpt), step=session.step, family=type(session.model).__name__)
    path = prior.save(prior_path(session.run.run_dir, name))
    limit = None if cfg.max_codes is None else int(cfg.max_codes)
    held_out = training_codes(session.model, session.data.val, limit, seed=int(cfg.seed) + 1)
    return {"val/code_nll": mean_nll(prior, held_out),  # nats per code, lower is better
            "val/code_nll_gaussian": mean_nll(fit_gaussian(codes), held_out), "file": str(path)}


def fit_gmm_prior(cfg: DictConfig, session: RunSession) -> dict[str, Any]:
    """A Gaussian mixture over continuous codes; its held-out code NLL beside the single fitted Gaussian's."""
    from aelab.models.fitted_prior import fit_gmm

    codes = _continuous_codes(cfg, session)  # (N, D)
    prior = fit_gmm(codes, int(cfg.components), int(cfg.seed))
    return {"prior": "gmm", "components": prior.components, "codes": prior.info["codes"],
            "converged": prior.info["converged"], **_held_out(cfg, session, prior, codes, "gmm")}


def fit_maf_prior(cfg: DictConfig, session: RunSession) -> dict[str, Any]:
    """A masked autoregressive flow over continuous codes, fitted by maximum likelihood; held-out NLL as the GMM's."""
    from rich.console import Console

    from aelab.models.maf_prior import fit_maf

    console = Console(stderr=True)
    codes = _continuous_codes(cfg, session)  # (N, D)
    prior = fit_maf(codes, int(cfg.layers), list(cfg.hidden), int(cfg.epochs), int(cfg.batch_size), float(cfg.lr),
                    int(cfg.seed), report=lambda line: console.print(line, highlight=False))
    return {"prior": "maf", "layers": prior.layers, "codes": prior.info["codes"], "best_epoch": prior.info["best_epoch"],
            **_held_out(cfg, session, prior, codes, "maf")}


def fit_pixelcnn_prior(cfg: DictConfig, session: RunSession) -> dict[str, Any]:
    """An autoregressive model over a VQ-VAE's grid of code indices, trained with a checkpoint per epoch."""
    from rich.console import Console

    from aelab.models.fitted_prior import prior_path
    from aelab.models.pixelcnn_prior import fit_pixelcnn

    console = Console(stderr=True)
    path = prior_path(session.run.run_dir, "pixelcnn")
    limit = None if cfg.max_codes is None else int(cfg.max_codes)
    prior = fit_pixelcnn(session.model, session.data.train, int(cfg.epochs), path.parent, val=session.data.val,
                         batch_size=int(cfg.batch_size), lr=float(cfg.lr), seed=int(cfg.seed),
                         report=lambda line: console.print(line, highlight=False),
                         max_codes=limit)
    codes = len(session.data.train) if limit is None else min(limit, len(session.data.train))
    return {"prior": "pixelcnn", "codes": codes, **prior.metrics, "file": str(path)}


FITTERS = {"gmm": fit_gmm_prior, "maf": fit_maf_prior, "pixelcnn": fit_pixelcnn_prior}  # by FITTED_PRIORS' names

main = hydra_entry(run)
