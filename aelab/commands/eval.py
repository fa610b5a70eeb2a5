"""`aelab eval run=<dir>`: loss terms and reconstruction quality of a trained run on a split."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab.commands._common import output_dir, run_command, save_json
from aelab.commands._from_run import load, load_data, print_results
from aelab.config_check import check_eval


def run(cfg: DictConfig) -> dict[str, Any]:
    from aelab.engine.evaluate import mean_terms, reconstruction_metrics
    from aelab.viz.images import save_png
    from aelab.viz.views import is_image, reconstruction_figure, reconstruction_grid, save_figure

    check_eval(cfg)
    loaded, device = load(cfg)
    data = load_data(cfg, loaded, device)
    split = getattr(data, cfg.split)
    step = int(loaded.checkpoint.get("progress", {}).get("step", 0))  # step-dependent weights (KL warm-up) as trained
    terms = {k: float(v) for k, v in mean_terms(loaded.model, split, int(cfg.batch_size), step).items()}
    terms["loss"] = sum(terms.values())
    terms.update(reconstruction_metrics(loaded.model, split, int(cfg.batch_size)))
    metrics: dict[str, Any] = {f"{cfg.split}/{k}": v for k, v in terms.items()}
    metrics.update({"data": data.name, "ckpt": cfg.ckpt, "examples": len(split)})

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
    print_results(f"eval: {data.name} {cfg.split} ({len(split)} examples, ckpt={cfg.ckpt})", metrics, out)
    return {**metrics, "output_dir": str(out)}


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="eval")
def main(cfg: DictConfig) -> Any:
    return run_command(lambda: run(cfg))
