"""`aelab eval run=<dir>`: measure a trained run on a split; every metric the model's interface allows.

metrics.json holds flat `split/metric` keys: loss terms, reconstruction (BCE, MSE, PSNR, SSIM), the
family's own diagnostics (KL per dimension, active units, sparsity ...), ELBO terms and the
importance-sampled NLL (families with a Gaussian posterior), linear-probe / k-NN accuracy of the codes
with PCA as the reference line, denoising PSNR per noise level, anomaly-detection AUROC / AUPRC, and for
families with a prior the Fréchet distance and precision / recall in a small classifier's feature space.
"""

from __future__ import annotations

import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab.commands._common import output_dir, run_command, save_json
from aelab.commands._from_run import load, load_data, named_data_config, print_results
from aelab.config_check import check_eval

DIAGNOSTIC_EXAMPLES = 5000  # the family's diagnostics are computed on this many examples of the split


def _note(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{text}[/]", highlight=False)


def outlier_split(cfg: DictConfig, loaded, device):
    """The split of the dataset given as anomaly.outliers, checked to have the model's input shape."""
    from aelab.data import build_data
    from aelab.errors import UserError

    data = build_data(named_data_config(cfg.anomaly.outliers, "anomaly.outliers"), device)
    if tuple(data.shape) != tuple(loaded.data["shape"]):
        raise UserError("anomaly.outliers", f"{data.name} has examples of shape {list(data.shape)}, the model "
                        f"takes {list(loaded.data['shape'])}", "a dataset of the training data's shape")
    return getattr(data, cfg.split), data.name


def measure(cfg: DictConfig, loaded, data, split, timings: dict[str, float]) -> dict[str, Any]:
    """Every metric that applies to this model and data, as {metric: value} (no split prefix)."""
    import torch

    from aelab.engine.evaluate import mean_terms
    from aelab.metrics.anomaly import anomaly_metrics
    from aelab.metrics.generation import generation_metrics
    from aelab.metrics.posterior import posterior_metrics
    from aelab.metrics.probes import latent_probes
    from aelab.metrics.reconstruction import denoising_psnr, reconstruction_quality
    from aelab.viz.views import is_image

    model, bs, images = loaded.model, int(cfg.batch_size), is_image(data.shape)
    values: dict[str, Any] = {}

    def timed(name: str, fn) -> None:
        start = time.perf_counter()
        with torch.no_grad():
            values.update(fn())
        timings[name] = round(time.perf_counter() - start, 2)

    step = int(loaded.checkpoint.get("progress", {}).get("step", 0))  # step-dependent weights (KL warm-up) as trained

    def terms() -> dict[str, float]:
        out = {k: float(v) for k, v in mean_terms(model, split, bs, step).items()}
        return {**out, "loss": sum(out.values())}

    timed("losses", terms)
    timed("reconstruction", lambda: reconstruction_quality(model, split, bs, images))
    timed("diagnostics", lambda: model.diagnostics(split.head(min(len(split), DIAGNOSTIC_EXAMPLES))).scalars)
    if model.has_posterior:
        timed("posterior", lambda: posterior_metrics(model, split, bs, int(cfg.iw_samples), cfg.get("iw_examples")))
    if cfg.probe.max_train != 0 and data.num_classes and data.train.has_labels and split.has_labels:
        timed("probes", lambda: latent_probes(model, data.train, split, bs, cfg.probe.max_train,
                                              int(cfg.probe.neighbors), int(cfg.seed)))
    if images and len(cfg.noise):
        timed("denoising", lambda: denoising_psnr(model, split, bs, [float(v) for v in cfg.noise], int(cfg.seed)))
    if cfg.anomaly.outliers is not None:
        outliers, name = outlier_split(cfg, loaded, model.device)
        values["anomaly_outliers"] = name
        timed("anomaly", lambda: anomaly_metrics(model, split, bs, outliers=outliers))
    elif cfg.anomaly.normal is not None and split.has_labels:
        timed("anomaly", lambda: anomaly_metrics(model, split, bs, normal=[int(c) for c in cfg.anomaly.normal]))
    if model.has_prior and int(cfg.generation.samples) > 0 and data.num_classes and data.train.has_labels:
        timed("generation", lambda: generation_metrics(model, data, split, int(cfg.generation.samples), bs,
                                                       int(cfg.generation.epochs), int(cfg.seed), log=_note))
    return values


def run(cfg: DictConfig) -> dict[str, Any]:
    from aelab.viz.images import save_png
    from aelab.viz.views import is_image, reconstruction_figure, reconstruction_grid, save_figure

    check_eval(cfg)
    loaded, device = load(cfg)
    data = load_data(cfg, loaded, device)
    split = getattr(data, cfg.split)
    timings: dict[str, float] = {}
    values = measure(cfg, loaded, data, split, timings)
    metrics: dict[str, Any] = {f"{cfg.split}/{k}": v for k, v in values.items() if not isinstance(v, str)}
    metrics.update({"data": data.name, "ckpt": cfg.ckpt, "examples": len(split), "split": cfg.split,
                    **({"iw_samples": int(cfg.iw_samples)} if f"{cfg.split}/nll_iw" in metrics else {}),
                    **{k: v for k, v in values.items() if isinstance(v, str)},
                    "seconds": {k: v for k, v in timings.items()}})

    out = output_dir(loaded.run_dir, "eval")
    save_json(metrics, out / "metrics.json")
    OmegaConf.save(cfg, out / "config.yaml")
    if cfg.num_images > 0:
        if is_image(data.shape):
            head = split.head(int(cfg.num_images))
            save_png(reconstruction_grid(loaded.model, head.x, head.y), out / "reconstructions.png")
        else:  # vectors: a scatter of the data and its reconstructions
            head = split.head(2000)
            save_figure(reconstruction_figure(loaded.model, head.x, head.y), out / "reconstructions.png")
    if cfg.tensorboard:
        from aelab.viz.explore import log_eval_views, log_hparams, writer_for

        logger = writer_for(out)
        try:
            log_eval_views(logger, loaded.model, data, split, cfg.split, int(cfg.views.points), int(cfg.views.tsne),
                           int(cfg.views.grid_size), int(cfg.seed))
            log_hparams(logger, loaded.config, metrics)
        finally:
            logger.close()
    shown = {k: v for k, v in metrics.items() if k != "seconds" and "/kl_dim/" not in k}
    print_results(f"eval: {data.name} {cfg.split} ({len(split)} examples, ckpt={cfg.ckpt})", shown, out)
    return {**metrics, "output_dir": str(out)}


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="eval")
def main(cfg: DictConfig) -> Any:
    return run_command(lambda: run(cfg))
