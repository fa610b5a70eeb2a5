"""Validation of user-facing config values before any work starts (no torch import here)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
LIKELIHOODS = ("bernoulli", "gaussian")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _get(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    value = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
    return (value != "__absent__"), value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_int(cfg: DictConfig, key: str, minimum: int | None = None, nullable: bool = False) -> None:
    present, v = _get(cfg, key)
    if not present or (v is None and nullable):
        return
    rule = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if not _is_int(v):
        raise UserError(key, f"expected an integer, got {v!r}", rule)
    if minimum is not None and v < minimum:
        raise UserError(key, f"must be >= {minimum}, got {v}", rule)


def check_number(
    cfg: DictConfig, key: str, minimum: float | None = None, exclusive: bool = False,
    maximum: float | None = None, nullable: bool = False,
) -> None:
    present, v = _get(cfg, key)
    if not present or (v is None and nullable):
        return
    op = ">" if exclusive else ">="
    rule = "a number" + (f" {op} {minimum}" if minimum is not None else "")
    rule += f" and <= {maximum}" if maximum is not None else ""
    if not _is_number(v):
        raise UserError(key, f"expected a number, got {v!r}", rule)
    too_low = minimum is not None and (v <= minimum if exclusive else v < minimum)
    if too_low or (maximum is not None and v > maximum):
        raise UserError(key, f"out of range: {v}", rule)


def check_choice(cfg: DictConfig, key: str, allowed: Iterable[str]) -> None:
    present, v = _get(cfg, key)
    allowed = tuple(allowed)
    if present and v not in allowed:
        raise UserError(key, f"unknown value {v!r}", "one of: " + ", ".join(allowed))


def check_config(cfg: DictConfig) -> None:
    """Check the user-facing keys of a composed train/eval/sample/interpolate config."""
    check_int(cfg, "latent_dim", minimum=1)
    check_number(cfg, "beta", minimum=0)
    check_number(cfg, "noise", minimum=0)
    check_choice(cfg, "device", DEVICES)
    check_int(cfg, "seed", minimum=0)
    check_int(cfg, "epochs", minimum=0)
    check_int(cfg, "batch_size", minimum=1)
    check_number(cfg, "lr", minimum=0, exclusive=True)
    check_choice(cfg, "model.likelihood", LIKELIHOODS)
    check_model(cfg)
    check_number(cfg, "trainer.grad_clip", minimum=0, exclusive=True, nullable=True)
    check_int(cfg, "trainer.log_every", minimum=1)
    check_int(cfg, "trainer.eval_batch_size", minimum=1)
    check_int(cfg, "trainer.limit_batches", minimum=1, nullable=True)
    check_int(cfg, "trainer.checkpoint_every", minimum=1, nullable=True)
    check_choice(cfg, "trainer.strategy", ("auto", "single", "ddp"))
    check_int(cfg, "trainer.skip_nonfinite", minimum=0, nullable=True)
    check_choice(cfg, "trainer.precision", PRECISIONS)
    check_number(cfg, "data.val_fraction", minimum=0, maximum=0.9)


def check_open_interval(cfg: DictConfig, key: str, low: float, high: float, nullable: bool = False,
                        closed_high: bool = False) -> None:
    present, v = _get(cfg, key)
    if not present or (v is None and nullable):
        return
    rule = f"a number in ({low}, {high}{']' if closed_high else ')'}"
    if not _is_number(v) or not (low < v and (v <= high if closed_high else v < high)):
        raise UserError(key, f"out of range: {v!r}", rule)


def check_model(cfg: DictConfig) -> None:
    """Family keys, wherever a family has them (no family is named here), and rules across keys."""
    for key in ("model.beta", "model.input_noise", "model.weight_decay", "model.free_bits", "model.adv_weight",
                "model.recon_weight"):
        check_number(cfg, key, minimum=0)
    check_int(cfg, "model.kl_warmup_steps", minimum=0)
    check_int(cfg, "model.factor", minimum=1)
    check_int(cfg, "model.grid_size", minimum=1)
    check_open_interval(cfg, "model.rho", 0, 1)
    check_open_interval(cfg, "model.variance", 0, 1, nullable=True, closed_high=True)
    check_open_interval(cfg, "model.semi_supervised_fraction", 0, 1, nullable=True, closed_high=True)
    _, prior = _get(cfg, "model.prior")
    _, latent_dim = _get(cfg, "model.latent_dim")
    if prior == "grid" and latent_dim != 2:
        raise UserError("model.prior", f"grid is a 2-D lattice of uniform patches, latent_dim is {latent_dim}",
                        "latent_dim=2, or model.prior=gaussian|uniform|mixture")
    _, corruption = _get(cfg, "model.corruption")
    _, noise = _get(cfg, "model.input_noise")
    if corruption in ("salt_pepper", "masking") and _is_number(noise) and noise > 1:
        raise UserError("noise", f"{corruption} hits a fraction of the entries: {noise} is not one", "0 <= noise <= 1")


def check_run_dir(cfg: DictConfig, key: str, required: bool) -> None:
    """A training run directory given on the command line must exist and hold a checkpoint."""
    from pathlib import Path

    present, value = _get(cfg, key)
    if not present or value in (None, ""):
        if required:
            raise UserError(key, "no run directory given", f"{key}=outputs/<date>/<time>_<model>")
        return
    run = Path(str(value)).expanduser()
    if not run.is_dir():
        raise UserError(key, f"no such directory: {run}", "a run directory written by `aelab train`")
    if not (run / "checkpoints" / "last.pt").is_file():
        raise UserError(key, f"{run} holds no checkpoints/last.pt", "a run directory written by `aelab train`")


def check_threads(cfg: DictConfig) -> None:
    present, threads = _get(cfg, "threads")
    if present and threads != "auto" and not (_is_int(threads) and threads >= 1):
        raise UserError("threads", f"got {threads!r}", "auto (cores // parallel jobs) or an integer >= 1")


def check_train(cfg: DictConfig) -> None:
    check_config(cfg)
    check_run_dir(cfg, "resume", required=False)
    check_threads(cfg)
    present, objective = _get(cfg, "objective")
    if present and objective is not None and not str(objective).startswith(("val/", "train/")):
        raise UserError("objective", f"unknown metric {objective!r}", "a final metric such as val/loss or val/recon")


def check_report(cfg: DictConfig) -> None:
    """The folder must exist and hold at least one run (torch-free: the runs are found by their files)."""
    from pathlib import Path

    from aelab.sweep.runs import find_runs

    present, value = _get(cfg, "dir")
    if not present or value in (None, ""):
        raise UserError("dir", "no folder given", "aelab report multirun/<date>/<time>, or dir=<folder>")
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise UserError("dir", f"no such directory: {root}", "a sweep folder (multirun/<date>/<time>) or outputs/")
    if not find_runs(root):
        raise UserError("dir", f"no runs under {root}", "folders written by aelab train, with .hydra/ or metrics.json")


def check_number_list(cfg: DictConfig, key: str, minimum: float, integers: bool = False,
                      nullable: bool = False) -> None:
    """A list of numbers (a single number is refused with the list syntax as the hint)."""
    present, v = _get(cfg, key)
    if not present or (v is None and nullable):
        return
    kind = "integers" if integers else "numbers"
    rule = f"a list of {kind} >= {minimum}, e.g. {key}=[1,2]"
    valid = _is_int if integers else _is_number
    if not OmegaConf.is_list(v) and not isinstance(v, (list, tuple)):
        raise UserError(key, f"expected a list, got {v!r}", rule)
    bad = [x for x in v if not valid(x) or x < minimum]
    if bad:
        raise UserError(key, f"got {bad[0]!r}", rule)


def check_data_name(cfg: DictConfig, key: str) -> None:
    """A dataset name (conf/data/<name>.yaml) or {name: <name>, ...} with options to change."""
    from importlib import resources

    present, v = _get(cfg, key)
    if not present or v is None:
        return
    name = v.get("name") if OmegaConf.is_dict(v) else v
    options = sorted(p.name[:-5] for p in (resources.files("aelab.conf") / "data").iterdir() if p.name.endswith(".yaml"))
    if name not in options:
        raise UserError(key, f"unknown dataset {name!r}", "one of: " + ", ".join(options) + ", or {name: folder, source: {path: DIR}}")


def check_eval(cfg: DictConfig) -> None:
    # eval's noise is a list of levels, not training's input noise: checked as such, the rest as usual
    check_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "noise"]))
    check_threads(cfg)
    check_run_dir(cfg, "run", required=True)
    check_choice(cfg, "ckpt", ("last", "best"))
    check_choice(cfg, "split", ("train", "val", "test"))
    check_int(cfg, "num_images", minimum=0)
    check_int(cfg, "iw_samples", minimum=0)
    check_int(cfg, "iw_examples", minimum=1, nullable=True)
    check_number_list(cfg, "noise", minimum=0)
    check_int(cfg, "probe.max_train", minimum=0, nullable=True)
    check_int(cfg, "probe.neighbors", minimum=1)
    check_number_list(cfg, "anomaly.normal", minimum=0, integers=True, nullable=True)
    check_data_name(cfg, "anomaly.outliers")
    check_int(cfg, "generation.samples", minimum=0)
    check_int(cfg, "generation.epochs", minimum=1)
    check_int(cfg, "views.points", minimum=2)
    check_int(cfg, "views.tsne", minimum=0)
    check_int(cfg, "views.grid_size", minimum=2)


def check_span(cfg: DictConfig, key: str) -> None:
    present, v = _get(cfg, key)
    if not present or v is None:
        return
    rule = f"two numbers low < high, e.g. {key}=[-3,3]"
    if not OmegaConf.is_list(v) or len(v) != 2 or not all(_is_number(x) for x in v) or not v[0] < v[1]:
        raise UserError(key, f"got {v!r}", rule)


def check_sample(cfg: DictConfig) -> None:
    check_config(cfg)
    check_threads(cfg)
    check_run_dir(cfg, "run", required=True)
    check_choice(cfg, "ckpt", ("last", "best"))
    check_int(cfg, "n", minimum=1)
    check_int(cfg, "grid_size", minimum=2)
    check_span(cfg, "span")
    check_int(cfg, "y", minimum=0, nullable=True)
    check_int(cfg, "label", minimum=0, nullable=True)
    check_int(cfg, "per_class", minimum=1)
    check_int(cfg, "style_from", minimum=0, nullable=True)
    check_choice(cfg, "by", ("index", "class"))
    check_choice(cfg, "split", ("train", "val", "test"))


ARITHMETIC = re.compile(r"([+-]?)\s*(\d+)")  # signed terms of "a - b + c"
ARITHMETIC_WHOLE = re.compile(r"^\s*[+-]?\s*\d+(\s*[+-]\s*\d+)*\s*$")


def check_interpolate(cfg: DictConfig) -> None:
    check_config(cfg)
    check_threads(cfg)
    check_run_dir(cfg, "run", required=True)
    check_choice(cfg, "ckpt", ("last", "best"))
    check_choice(cfg, "split", ("train", "val", "test"))
    check_choice(cfg, "method", ("lerp", "slerp"))
    check_choice(cfg, "by", ("index", "class"))
    check_int(cfg, "from", minimum=0)
    check_int(cfg, "to", minimum=0)
    check_int(cfg, "from_label", minimum=0, nullable=True)
    check_int(cfg, "to_label", minimum=0, nullable=True)
    check_int(cfg, "pairs", minimum=0)
    check_int(cfg, "steps", minimum=2)
    check_int(cfg, "frames", minimum=2, nullable=True)
    check_int(cfg, "frame_ms", minimum=10)
    present, v = _get(cfg, "arithmetic")
    if present and v is not None and not ARITHMETIC_WHOLE.match(str(v)):
        raise UserError("arithmetic", f"cannot read {v!r}",
                        'indices (or classes with by=class) joined by + and -, e.g. arithmetic="3 - 5 + 9"')


CHECKS = {"train": check_train, "eval": check_eval, "sample": check_sample, "interpolate": check_interpolate,
          "report": check_report}
