"""`aelab eval run=<dir>`: measure a trained run on a split; every metric the model's interface allows.

The split's report (loss terms, the family's diagnostics, pictures) comes from the same function training
uses each epoch (aelab/engine/measure.py); eval adds what is too costly for every epoch: reconstruction quality
(BCE, MSE, PSNR, SSIM), ELBO terms and the importance-sampled NLL (families with a Gaussian posterior),
linear-probe / k-NN accuracy of the codes with PCA as the reference line, denoising PSNR per noise level,
anomaly-detection AUROC / AUPRC, for families with a prior the Fréchet distance and precision / recall in a
small classifier's feature space, and on data with known factors the disentanglement scores (with, on request,
MIG as the β-TCVAE paper estimates it over the whole grid: `disentanglement.sampled_mig`). metrics.json holds
flat `split/metric` keys and is written as each group of metrics is done, so a later failure loses nothing already
measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.examples import named_data_config
from aelab.commands.results import print_results
from aelab.commands.samplers import choose_sampler
from aelab.commands.session import RunSession, open_run
from aelab.config_check import check_eval
from aelab.errors import UserError


def _note(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{text}[/]", highlight=False)


def anomaly_plan(cfg: DictConfig, session: RunSession) -> tuple[str, Any] | None:
    """What anomaly detection will compare, checked before any metric is computed: ("normal", classes) or
    ("outliers", (split, name)), or None."""
    model, data = session.model, session.data
    if cfg.anomaly.outliers is not None:
        from aelab.data import build_data

        other = build_data(named_data_config(cfg.anomaly.outliers, "anomaly.outliers"), session.device)
        session.check_shape(other, "anomaly.outliers")
        split = getattr(other, session.split_name)
        if model.conditional and not split.has_labels:
            raise UserError("anomaly.outliers", f"{other.name} has no labels, and this run's model "
                            f"({type(model).__name__}) decodes with a class label", "a labelled dataset")
        return "outliers", (split, other.name)
    if cfg.anomaly.normal is not None:
        if not session.split.has_labels:
            raise UserError("anomaly.normal", f"the {session.split_name} split of {data.name} has no labels",
                            "anomaly.outliers=<dataset> instead")
        classes = int(data.num_classes or 0)
        unknown = [int(c) for c in cfg.anomaly.normal if not 0 <= int(c) < classes]
        if unknown:
            names = ", ".join(f"{i}={n}" for i, n in enumerate(data.class_names or [])) or f"0..{classes - 1}"
            raise UserError("anomaly.normal", f"no class {unknown[0]} in {data.name}", f"classes: {names}")
        return "normal", [int(c) for c in cfg.anomaly.normal]
    return None


def disentanglement(model, factors, cfg: DictConfig, seed: int) -> dict[str, float]:
    """The five disentanglement scores of the model's codes (the posterior mean for VAE-type families)."""
    from aelab.metrics.disentanglement import disentanglement_scores

    def encode(images):  # rendered on the CPU, encoded on the model's device
        return model.encode(images.to(model.device)).float()

    return disentanglement_scores(encode, factors, num_train=int(cfg.num_train), num_eval=int(cfg.num_eval),
                                  batch_size=int(cfg.batch_size), variance_points=int(cfg.variance_points),
                                  bins=int(cfg.bins), dci_estimator=str(cfg.dci_estimator),
                                  sap_continuous=bool(cfg.sap_continuous), seed=seed)


def sampled_mig_plan(cfg: DictConfig, session: RunSession) -> list[int] | None:
    """The factors (by index) `disentanglement.sampled_mig` averages over, checked before any metric is computed;
    None where it is off."""
    if not cfg.disentanglement.sampled_mig.enabled:
        return None
    model, data = session.model, session.data
    if data.factors is None:
        raise UserError("disentanglement.sampled_mig.enabled", f"data '{data.name}' has no known factors",
                        "false, or data with factors (data=dsprites)")
    if not model.has_posterior:
        raise UserError("disentanglement.sampled_mig.enabled",
                        f"{type(model).__name__} has no Gaussian posterior q(z|x) to draw codes from",
                        "false, or a VAE-type family (vae, beta_vae, beta_tcvae, factor_vae, dip_vae, ...)")
    names = list(data.factors.names)
    chosen = names if cfg.disentanglement.sampled_mig.factors == "all" else data.factors.chen_mig_factors
    if chosen is None:
        raise UserError("disentanglement.sampled_mig.factors", f"Chen et al. score no MIG on {data.name}",
                        "all")
    return sorted(names.index(n) for n in chosen)


def sampled_mig(model, factors, chosen: list[int], cfg: DictConfig, batch_size: int, seed: int) -> dict[str, float]:
    """MIG as Chen et al.'s code estimates it (aelab/metrics/sampled_mig.py), with each chosen factor's gap."""
    from aelab.metrics.sampled_mig import sampled_mig_score

    def posterior(images):  # rendered on the CPU, encoded on the model's device
        return model.posterior(images.to(model.device))

    gaps = sampled_mig_score(posterior, factors, chosen, samples=int(cfg.samples), seed=seed, batch_size=batch_size)
    return {"sampled_mig": sum(gaps.values()) / len(gaps),
            **{f"sampled_mig_gap/{factors.names[j]}": gap for j, gap in gaps.items()}}


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.engine.measure import PictureOptions, measure
    from aelab.metrics.anomaly import anomaly_metrics
    from aelab.metrics.generation import generation_metrics
    from aelab.metrics.posterior import posterior_metrics
    from aelab.metrics.probes import latent_probes
    from aelab.metrics.reconstruction import denoising_psnr, reconstruction_quality
    from aelab.viz.explore import eval_views
    from aelab.viz.views import release

    check_eval(cfg)
    with open_run(cfg, "eval") as session:
        model, data, split, name = session.model, session.data, session.split, session.split_name
        bs, images, seed = int(cfg.batch_size), model.images, int(cfg.seed)
        anomaly = anomaly_plan(cfg, session)  # mistakes in the anomaly keys surface before any metric is computed
        chosen_factors = sampled_mig_plan(cfg, session)
        out = session.out
        out.metrics({"data": data.name, "ckpt": cfg.ckpt, "examples": len(split), "split": name})
        seconds: dict[str, float] = {}

        def timed(group: str, fn: Callable[[], dict[str, Any]]) -> None:
            start = time.perf_counter()
            with torch.no_grad():
                found = fn()
            seconds[group] = round(time.perf_counter() - start, 2)
            out.metrics({**{f"{name}/{k}": v for k, v in found.items()}, "seconds": dict(seconds)})

        wants_pictures = int(cfg.num_images) > 0 or bool(cfg.tensorboard) or bool(cfg.views.files)
        options = PictureOptions(num_images=int(cfg.num_images) or 32, manifold_points=int(cfg.views.points),
                                 grid_size=int(cfg.views.grid_size))
        report = measure(model, split, step=session.step, batch_size=bs, class_names=data.class_names,
                         pictures=options if wants_pictures else None)
        out.metrics({f"{name}/{k}": v for k, v in report.scalars.items()})
        out.metrics({"directions": report.prefixed_directions(name)})  # the family's word on its names
        timed("reconstruction", lambda: reconstruction_quality(model, split, bs, images))
        if model.has_posterior:
            timed("posterior", lambda: posterior_metrics(model, split, bs, int(cfg.iw_samples), cfg.get("iw_examples")))
            if f"{name}/nll_iw" in out.values:
                out.metrics({"iw_samples": int(cfg.iw_samples)})
        if cfg.probe.max_train != 0 and data.num_classes and data.train.has_labels and split.has_labels:
            timed("probes", lambda: latent_probes(model, data.train, split, bs, cfg.probe.max_train,
                                                  int(cfg.probe.neighbors), seed))
        if images and len(cfg.noise):
            timed("denoising", lambda: denoising_psnr(model, split, bs, [float(v) for v in cfg.noise], seed))
        if anomaly is not None and anomaly[0] == "outliers":
            outliers, other_name = anomaly[1]
            out.metrics({"anomaly_outliers": other_name})
            timed("anomaly", lambda: anomaly_metrics(model, split, bs, outliers=outliers))
        elif anomaly is not None:
            timed("anomaly", lambda: anomaly_metrics(model, split, bs, normal=anomaly[1]))
        if data.factors is not None and cfg.disentanglement.enabled:
            timed("disentanglement", lambda: disentanglement(model, data.factors, cfg.disentanglement, seed))
        if chosen_factors is not None:
            timed("sampled_mig", lambda: sampled_mig(model, data.factors, chosen_factors,
                                                     cfg.disentanglement.sampled_mig, bs, seed))
        sampler = choose_sampler(session, str(cfg.generation.prior), "generation.prior", gaussian_fallback=False)
        if sampler is not None and int(cfg.generation.samples) > 0 and data.num_classes and data.train.has_labels:
            out.metrics({"generation_prior": sampler.source})
            timed("generation", lambda: generation_metrics(model, data, split, int(cfg.generation.samples), bs,
                                                           int(cfg.generation.epochs), seed, log=_note,
                                                           draw=lambda n: sampler.images(model, n)))

        if int(cfg.num_images) > 0:
            picture = report.images.get("reconstructions", report.figures.get("reconstructions"))
            out.picture("reconstructions", picture)
        if out.logger is not None:
            from aelab.engine.measure import hparams_of

            eval_views(report, model, data, split, name, int(cfg.views.tsne), seed, out.logger.writer)
            out.report(report, name)
            numbers = {k: float(v) for k, v in out.values.items() if k.startswith(f"{name}/")
                       and isinstance(v, (int, float)) and not isinstance(v, bool)}
            out.logger.scalars({k: v for k, v in numbers.items() if k[len(name) + 1 :] not in report.scalars}, 0)
            out.logger.hparams(hparams_of(session.config), numbers)  # the HParams tab reads those scalars
        if cfg.views.files:  # every picture of the report as <name>.png too, for readers without TensorBoard
            for key, picture in {**report.images, **report.figures}.items():
                if key not in out.files:
                    out.picture(key, picture)
        metrics = dict(out.values)
        release(report.figures.values())  # the ones no sink wrote (TensorBoard closes what it writes)
    shown = {k: v for k, v in metrics.items() if k not in ("seconds", "directions") and "/kl_dim/" not in k}
    print_results(f"eval: {data.name} {name} ({len(split)} examples, ckpt={cfg.ckpt})", shown, out.dir)
    return {**metrics, "output_dir": str(out.dir)}


main = hydra_entry(run)
