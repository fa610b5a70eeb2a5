"""`aelab interpolate run=<dir> from=i to=j`: decode a straight (or spherical) path between two codes."""

from __future__ import annotations

from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from aelab.commands._common import output_dir, run_command
from aelab.commands._from_run import load, load_data, print_results
from aelab.config_check import check_interpolate
from aelab.errors import UserError


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:  # (D,), (D,), (T,) -> (T, D)
    return a + t[:, None] * (b - a)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (norms interpolated linearly); falls back to lerp for parallel codes."""
    na, nb = a.norm(), b.norm()
    cos = torch.dot(a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return lerp(a, b, t)
    ua, ub = a / na, b / nb
    w = torch.sin((1 - t)[:, None] * omega) * ua + torch.sin(t[:, None] * omega) * ub
    return w / torch.sin(omega) * (na + t[:, None] * (nb - na))


PATHS = {"lerp": lerp, "slerp": slerp}


def first_of_class(split, label: int, key: str) -> int:
    """Index of the first example of class `label` in the split (from_label / to_label)."""
    seen = 0
    for batch in split.batches(4096):
        if batch.y is None:
            raise UserError(f"{key}_label", "the data has no labels", f"pick an index with {key}=N")
        hits = (batch.y == int(label)).nonzero()
        if len(hits):
            return seen + int(hits[0])
        seen += len(batch)
    raise UserError(f"{key}_label", f"no example of class {label} in the split", f"pick an index with {key}=N")


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch.nn.functional as F

    from aelab.viz.images import grid, save_gif, save_png
    from aelab.viz.views import is_image, path_figure, save_figure

    check_interpolate(cfg)
    loaded, device = load(cfg)
    data = load_data(cfg, loaded, device)
    split = getattr(data, cfg.split)
    first, last = (first_of_class(split, cfg.get(f"{key}_label"), key) if cfg.get(f"{key}_label") is not None
                   else int(cfg[key]) for key in ("from", "to"))
    for key, index in (("from", first), ("to", last)):
        if index >= len(split):
            raise UserError(key, f"index {index} is past the end of the {cfg.split} split", f"0..{len(split) - 1}")
    model = loaded.model
    batch = split.take([first, last])
    with torch.no_grad():
        codes = model.encode(batch.x, batch.y)  # (2, D)
        t = torch.linspace(0, 1, int(cfg.steps), device=codes.device)
        path = PATHS[cfg.method](codes[0], codes[1], t)  # (steps, D)
        y = None if batch.y is None else batch.y[:1].expand(len(t))  # conditional families: keep the first label
        frames = model.likelihood.mean(model.decode(path, y)).float()  # (steps, C, H, W) or (steps, D)
    out = output_dir(loaded.run_dir, "interpolate")
    if is_image(data.shape):
        frames = frames.clamp(0, 1)
        strip = torch.cat([batch.x[:1], frames, batch.x[1:]])  # input, path, input
        files = {"strip": save_png(grid(strip, nrow=len(strip)), out / "interpolation.png").name}
        if cfg.gif:
            scale = max(1, 112 // frames.shape[-1])  # tiny images are enlarged so the GIF is watchable
            big = F.interpolate(frames, scale_factor=scale, mode="nearest")
            files["gif"] = save_gif([grid(f[None], nrow=1, pad=0) for f in big], out / "interpolation.gif",
                                    frame_ms=int(cfg.frame_ms)).name
    else:  # vectors: the decoded path as connected points
        files = {"path": save_figure(path_figure(batch.x, frames), out / "interpolation.png").name}
    OmegaConf.save(cfg, out / "config.yaml")
    info = {**files, "method": cfg.method, "from": first, "to": last, "steps": int(cfg.steps)}
    print_results(f"interpolate: {cfg.split}[{first}] -> {cfg.split}[{last}]", info, out)
    return {**info, "output_dir": str(out)}


@hydra.main(version_base="1.3", config_path="pkg://aelab.conf", config_name="interpolate")
def main(cfg: DictConfig) -> Any:
    return run_command(lambda: run(cfg))
