"""`aelab fit-prior run=<dir> prior=gmm components=10`: fit a density to a run's training codes, store it in the run.

The fitting lives in aelab/models/fitted_prior.py; this command loads the run, encodes its training split,
fits, writes <run>/priors/<prior>.pt and reports how well the density fits held-out (validation) codes
next to the single fitted Gaussian `aelab sample` uses for families without a prior.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from aelab.commands._common import run_command
from aelab.commands.session import open_run, print_results
from aelab.config_check import check_fit_prior


def run(cfg: DictConfig) -> dict[str, Any]:
    from aelab.models.fitted_prior import fit_gaussian, fit_gmm, mean_nll, prior_path, training_codes

    check_fit_prior(cfg)
    with open_run(cfg, "fit_prior") as session:
        model, data, seed = session.model, session.data, int(cfg.seed)
        limit = None if cfg.max_codes is None else int(cfg.max_codes)
        codes = training_codes(model, data.train, limit, seed=seed)  # (N, D)
        prior = fit_gmm(codes, int(cfg.components), seed)
        prior.info.update(checkpoint=str(cfg.ckpt), step=session.step, family=type(model).__name__)
        path = prior.save(prior_path(session.run.run_dir, str(cfg.prior)))
        held_out = training_codes(model, data.val, limit, seed=seed + 1)
        results = {"prior": str(cfg.prior), "components": prior.components, "codes": prior.info["codes"],
                   "converged": prior.info["converged"],
                   "val/code_nll": mean_nll(prior, held_out),  # nats per code, lower is better
                   "val/code_nll_gaussian": mean_nll(fit_gaussian(codes), held_out), "file": str(path)}
        session.out.metrics(results)
        print_results(f"fit-prior: {cfg.prior} with {prior.components} components on {prior.info['codes']} "
                      "training codes", results, session.out.dir)
    return {**results, "output_dir": str(session.out.dir)}


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="fit_prior")
def main(cfg: DictConfig) -> Any:
    return run_command(lambda: run(cfg))
