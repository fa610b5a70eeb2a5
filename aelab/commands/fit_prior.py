"""`aelab fit-prior run=<dir> prior=gmm components=10`: fit a density to a run's training codes, store it in the run.

The fitting lives in aelab/models/fitted_prior.py; this command loads the run, encodes its training split,
fits, writes <run>/priors/<prior>.pt and reports how well the density fits held-out (validation) codes
next to the single fitted Gaussian `aelab sample` uses for families without a prior.
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
        results = fit_pixelcnn_prior(cfg, session) if cfg.prior == "pixelcnn" else fit_gmm_prior(cfg, session)
        session.out.metrics(results)
        print_results(f"fit-prior: {cfg.prior} on {results['codes']} training codes", results, session.out.dir)
    return {**results, "output_dir": str(session.out.dir)}


def fit_gmm_prior(cfg: DictConfig, session: RunSession) -> dict[str, Any]:
    """A Gaussian mixture over continuous codes; its held-out code NLL beside the single fitted Gaussian's."""
    from aelab.models.fitted_prior import fit_gaussian, fit_gmm, mean_nll, prior_path, training_codes

    model, data, seed = session.model, session.data, int(cfg.seed)
    if hasattr(model, "code_indices"):
        raise UserError("prior", f"{type(model).__name__} codes are indices into a codebook, not continuous",
                        "prior=pixelcnn")
    limit = None if cfg.max_codes is None else int(cfg.max_codes)
    codes = training_codes(model, data.train, limit, seed=seed)  # (N, D)
    prior = fit_gmm(codes, int(cfg.components), seed)
    prior.info.update(checkpoint=str(cfg.ckpt), step=session.step, family=type(model).__name__)
    path = prior.save(prior_path(session.run.run_dir, "gmm"))
    held_out = training_codes(model, data.val, limit, seed=seed + 1)
    return {"prior": "gmm", "components": prior.components, "codes": prior.info["codes"],
            "converged": prior.info["converged"],
            "val/code_nll": mean_nll(prior, held_out),  # nats per code, lower is better
            "val/code_nll_gaussian": mean_nll(fit_gaussian(codes), held_out), "file": str(path)}


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


main = hydra_entry(run)
