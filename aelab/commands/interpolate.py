"""`aelab interpolate run=<dir> from=i to=j`: decode straight (or spherical) paths between codes, and
latent vector arithmetic (`arithmetic="a - b + c"` over examples or class means).

Codes are the model's deterministic codes: the posterior mean for VAE-type families.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from aelab.commands._common import hydra_entry
from aelab.commands.examples import pick_index
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import ARITHMETIC, check_interpolate
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


def parse_arithmetic(text: str) -> list[tuple[int, int]]:
    """'a - b + c' -> [(+1, a), (-1, b), (+1, c)]."""
    return [(-1 if sign == "-" else 1, int(number)) for sign, number in ARITHMETIC.findall(str(text))]


def endpoints(cfg: DictConfig, split) -> list[tuple[int, int]]:
    """The (from, to) index pairs: `pairs` random pairs, or the one given by from/to (by index or class)."""
    if int(cfg.pairs) > 0:
        if len(split) < 2:
            raise UserError("pairs", f"the {cfg.split} split has {len(split)} example", "a split with 2 or more")
        g = torch.Generator().manual_seed(int(cfg.seed))
        return [tuple(int(i) for i in torch.randperm(len(split), generator=g)[:2]) for _ in range(int(cfg.pairs))]
    ends = []
    for key in ("from", "to"):
        older = cfg.get(f"{key}_label")  # from_label=7: the older spelling of by=class from=7
        by, value = ("class", older) if older is not None else (cfg.by, cfg[key])
        ends.append(pick_index(split, int(value), by, f"{key}_label" if older is not None else key, cfg.split))
    return [(ends[0], ends[1])]


@torch.no_grad()
def decoded_paths(model, x: Tensor, y: Tensor | None, method: str, steps: int) -> Tensor:
    """x (2P, ...) as P (from, to) pairs -> decoded paths (P, steps, ...), each decoded with its `from` label."""
    codes = model.encode(x, y)  # (2P, D)
    t = torch.linspace(0, 1, steps, device=codes.device)
    frames = []
    for p in range(0, len(codes), 2):
        path = PATHS[method](codes[p], codes[p + 1], t)  # (steps, D)
        labels = None if y is None else y[p : p + 1].expand(steps)  # conditional families: keep the first label
        frames.append(model.likelihood.mean(model.decode(path, labels)).float())
    return torch.stack(frames)


@torch.no_grad()
def arithmetic(model, split, cfg: DictConfig) -> tuple[Tensor, Tensor, str]:
    """The operands' pictures (K, ...) and the decoded result (1, ...) of `a - b + c` over codes; a description."""
    terms = parse_arithmetic(cfg.arithmetic)
    total, shown, label = 0, [], None
    for sign, value in terms:
        if cfg.by == "class":
            codes = []
            for batch in split.batches(1024):
                if batch.y is None:
                    raise UserError("arithmetic", "class means need labels, the data has none", "by=index")
                hit = batch.y == value
                codes.append(model.encode(batch.x[hit], batch.y[hit]))
            members = torch.cat(codes)  # (N_c, D)
            if not len(members):
                raise UserError("arithmetic", f"no example of class {value} in the {cfg.split} split", "another class")
            code = members.mean(0, keepdim=True)  # (1, D)
            y = torch.full((1,), value, device=code.device) if split.has_labels else None
            picture = model.likelihood.mean(model.decode(code, y)).float()  # the class mean, decoded
        else:
            index = pick_index(split, value, "index", "arithmetic", cfg.split)
            batch = split.take([index])
            code, y, picture = model.encode(batch.x, batch.y), batch.y, batch.x.float()
        label = y if label is None else label  # conditional families decode the result with the first label
        total = total + sign * code
        shown.append(picture)
    result = model.likelihood.mean(model.decode(total, label)).float()
    what = " ".join(f"{'-' if s < 0 else '+'} {'mean of class ' if cfg.by == 'class' else '#'}{v}"
                    for s, v in terms).lstrip("+ ")
    return torch.cat(shown), result, what


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch.nn.functional as F

    from aelab.viz.images import grid
    from aelab.viz.views import path_figure, samples_figure

    check_interpolate(cfg)
    with open_run(cfg, "interpolate") as session:
        model, split, images = session.model, session.split, session.model.images
        pairs = endpoints(cfg, split)
        batch = split.take([i for pair in pairs for i in pair])  # (2P, ...) from, to, from, to ...
        steps, frames_n = int(cfg.steps), int(cfg.frames or cfg.steps)
        paths = decoded_paths(model, batch.x, batch.y, cfg.method, steps)  # (P, steps, ...)
        computed = arithmetic(model, split, cfg) if cfg.arithmetic is not None else None  # mistakes before any folder
        out = session.out
        if images:
            rows = [torch.cat([batch.x[2 * p : 2 * p + 1], paths[p].clamp(0, 1), batch.x[2 * p + 1 : 2 * p + 2]])
                    for p in range(len(pairs))]  # input, path, input
            out.picture("interpolation", grid(torch.cat(rows), nrow=steps + 2), tag="interpolate/strip")
            if cfg.gif:
                moving = paths if frames_n == steps else decoded_paths(model, batch.x, batch.y, cfg.method, frames_n)
                scale = max(1, 112 // moving.shape[-1])  # tiny images are enlarged so the GIF is watchable
                gif_frames = []
                for f in range(frames_n):  # one frame: every pair at the same point of its path
                    big = F.interpolate(moving[:, f].clamp(0, 1), scale_factor=scale, mode="nearest")
                    gif_frames.append(grid(big, nrow=min(len(pairs), 4), pad=0 if len(pairs) == 1 else 2))
                out.gif("interpolation", gif_frames, int(cfg.frame_ms), tag="interpolate/strip_frames")
        else:  # vectors: the decoded path as connected points
            out.picture("interpolation", path_figure(batch.x[:2], paths[0]))
        info: dict[str, Any] = {"method": cfg.method, "pairs": ", ".join(f"{i}->{j}" for i, j in pairs), "steps": steps}
        if computed is not None:
            operands, result, what = computed
            info["arithmetic_of"] = what
            if images:  # the operands, then the result
                picture = grid(torch.cat([operands.clamp(0, 1), result.clamp(0, 1)]), nrow=len(operands) + 1)
                out.picture("arithmetic", picture, tag="interpolate/arithmetic")
            else:
                out.picture("arithmetic", samples_figure(result, operands))
        files = dict(out.files)
    title = f"interpolate: {cfg.split} " + ", ".join(f"[{i}] -> [{j}]" for i, j in pairs[:4])
    print_results(title + (" ..." if len(pairs) > 4 else ""), {**files, **info}, out.dir)
    return {**files, **info, "from": pairs[0][0], "to": pairs[0][1], "output_dir": str(out.dir)}


main = hydra_entry(run)
