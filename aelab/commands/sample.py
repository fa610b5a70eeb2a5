"""`aelab sample run=<dir>`: decode draws from the prior, the 2-D latent plane, classes and style transfer.

Families with a prior draw from it (an AAE from the prior it was trained to match); a density `aelab fit-prior`
stored in the run (GMM, PixelCNN) comes first, and families with neither draw from a Gaussian fitted to their
training codes; the table says which (`prior=` chooses). Conditional families also get a grid
of every class (`y=` picks one) and, with `style_from=`, an example's style decoded as every class.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.examples import pick_index
from aelab.commands.results import print_results
from aelab.commands.samplers import choose_sampler
from aelab.commands.session import open_run
from aelab.config_check import check_sample
from aelab.errors import UserError


def _class_label(cfg: DictConfig, model) -> int | None:
    label = cfg.get("y") if cfg.get("y") is not None else cfg.get("label")
    if label is not None and not model.samples_by_class:
        raise UserError("y", f"the model of this run ({type(model).__name__}) does not generate by class",
                        "a conditional run: model=cvae, cae, or aae with model.supervised=true")
    if label is not None and not 0 <= int(label) < int(model.num_classes or 0):
        raise UserError("y", f"no class {label}", f"0..{int(model.num_classes or 0) - 1}")
    return None if label is None else int(label)


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.viz.images import grid
    from aelab.viz.views import latent_codes, latent_grids, samples_figure

    check_sample(cfg)
    with open_run(cfg, "sample") as session:
        model = session.model
        label = _class_label(cfg, model)
        if cfg.style_from is not None and not model.conditional:
            raise UserError("style_from", f"the model of this run ({type(model).__name__}) does not decode by class",
                            "a conditional run: model=cvae or cae")
        images = model.images
        sampler = choose_sampler(session, str(cfg.prior), "prior", gaussian_fallback=True)
        needs_data = not model.has_prior or cfg.style_from is not None
        data = session.data if needs_data else None
        n, info, pictures = int(cfg.n), {"source": sampler.source}, {}
        with torch.no_grad():
            y = None if label is None else torch.full((n,), label, device=model.device)
            drawn = sampler.images(model, n, y)
            name = {"model": "samples", "gaussian": "samples_fitted_gaussian"}.get(sampler.key, f"samples_{sampler.key}")
            if not images:
                background = None if data is None else data.train.head(2000).x
                pictures[name] = samples_figure(drawn, background)
            else:
                pictures[name] = grid(drawn, nrow=int(math.ceil(math.sqrt(n))))
                if model.samples_by_class and label is None and sampler.key == "model":
                    k, per = int(model.num_classes), int(cfg.per_class)  # one row per class
                    labels = torch.arange(k, device=model.device).repeat_interleave(per)
                    pictures["samples_by_class"] = grid(model.sample(k * per, labels), nrow=per)
                if model.latent_dim == 2:
                    codes = None if model.has_prior else latent_codes(model, data.train, 5000)[0]
                    span = None if cfg.span is None else (float(cfg.span[0]), float(cfg.span[1]))
                    pictures.update(latent_grids(model, codes, int(cfg.grid_size), label, span))
                if cfg.style_from is not None:
                    pictures["style_transfer"] = style_transfer(model, data, cfg)
        for key, picture in pictures.items():
            session.out.picture(key, picture, tag=f"sample/{key}" if images else None)
        files, out_dir = dict(session.out.files), session.out.dir
    print_results(f"sample: {n} draws from {info['source']}", {**files, **info}, out_dir)
    return {**files, **info, "output_dir": str(out_dir)}


def style_transfer(model, data, cfg: DictConfig):
    """One row: the chosen example, then its code decoded with every class label (style kept, class swapped)."""
    import torch

    from aelab.viz.images import grid

    split = getattr(data, cfg.split)
    index = pick_index(split, int(cfg.style_from), cfg.by, "style_from", cfg.split)
    batch = split.take([index])
    k = int(model.num_classes)
    z = model.encode(batch.x, batch.y)  # (1, D)
    decoded = model.likelihood.mean(model.decode(z.expand(k, -1), torch.arange(k, device=z.device)))
    return grid(torch.cat([batch.x, decoded]), nrow=k + 1)


main = hydra_entry(run)
