"""`aelab traverse run=<dir>`: latent traversals, a row per code dimension swept over its range.

Rows are ordered by KL for families with a Gaussian posterior (the dimensions that carry information first);
the range is the prior's 2%..98% quantiles, or the training codes' for families without a prior.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.examples import pick_index
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import check_traverse


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.errors import UserError
    from aelab.viz.views import (latent_codes, traversal, traversal_gif_frames, traversal_grid, traversal_order,
                                 traversal_range)

    check_traverse(cfg)
    with open_run(cfg, "traverse") as session:
        model, split = session.model, session.split
        if not model.images:
            raise UserError("run", f"traversals decode images, this run's data has shape {list(session.input_shape)}",
                            "a run on image data")
        index = pick_index(split, int(cfg.index), "index", "index", session.split_name)
        example = split.take([index])
        with torch.no_grad():
            head = split.head(min(len(split), 2000))
            dims, kl = traversal_order(model, head.x, head.y)
            dims = dims[: int(cfg.dims)] if cfg.dims is not None else dims
            codes = None if model.has_prior else latent_codes(model, session.data.train, 5000)[0]
            span = None if cfg.span is None else (float(cfg.span[0]), float(cfg.span[1]))
            low, high = traversal_range(model, codes, span)
            rows = traversal(model, example.x, example.y, dims, low, high, int(cfg.steps))
        out = session.out
        out.picture("traversal", traversal_grid(rows), tag="traverse/rows")
        out.gif("traversal", traversal_gif_frames(rows), int(cfg.frame_ms), tag="traverse/frames")
        order = [f"{d} (KL {float(kl[d]):.2f})" if kl is not None else str(d) for d in dims]
        info = {"example": f"{session.split_name}[{index}]", "rows (dimension)": ", ".join(order),
                "range": "given span" if span else ("the prior's 2%..98%" if codes is None else "the codes' 2%..98%")}
        files = dict(out.files)
    print_results(f"traverse: {len(dims)} dimensions x {int(cfg.steps)} steps", {**files, **info}, out.dir)
    return {**files, **info, "dims": dims, "output_dir": str(out.dir)}


main = hydra_entry(run)
