"""`aelab sample run=<dir>`: images decoded from prior draws, and the decoded plane of 2-D codes."""

from __future__ import annotations

import math
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab.commands._common import output_dir, run_command
from aelab.commands._from_run import load, print_results
from aelab.config_check import check_sample
from aelab.models.base import NoPriorError


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.errors import UserError
    from aelab.viz.images import grid, save_png
    from aelab.viz.views import is_image, latent_grids, samples_figure, save_figure

    check_sample(cfg)
    loaded, _ = load(cfg)
    model = loaded.model
    if not model.has_prior:  # before any folder is made
        raise NoPriorError("run", f"the model of this run ({type(model).__name__}) has no prior to sample from",
                           "sample a run of a family with a prior, e.g. model=vae")
    label = cfg.get("label")
    if label is not None and not model.samples_by_class:
        raise UserError("label", f"the model of this run ({type(model).__name__}) does not generate by class",
                        "a conditional run: model=cvae, cae, or aae with model.supervised=true")
    if label is not None and not 0 <= int(label) < int(model.num_classes or 0):
        raise UserError("label", f"no class {label}", f"0..{int(model.num_classes or 0) - 1}")
    out = output_dir(loaded.run_dir, "sample")
    with torch.no_grad():
        y = None if label is None else torch.full((int(cfg.n),), int(label), device=model.device)
        images = model.sample(int(cfg.n), y)
        if not is_image(tuple(loaded.data["shape"])):  # vectors: a scatter plot
            files = {"samples": save_figure(samples_figure(images), out / "samples.png").name}
        else:
            files = {"samples": save_png(grid(images, nrow=int(math.ceil(math.sqrt(cfg.n)))), out / "samples.png").name}
            if model.latent_dim == 2:
                for name, image in latent_grids(model, None, int(cfg.grid_size), label).items():
                    files[name] = save_png(image, out / f"{name.replace('/', '_')}.png").name
    OmegaConf.save(cfg, out / "config.yaml")
    print_results(f"sample: {cfg.n} draws from the prior", files, out)
    return {**files, "output_dir": str(out)}


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="sample")
def main(cfg: DictConfig) -> Any:
    return run_command(lambda: run(cfg))
