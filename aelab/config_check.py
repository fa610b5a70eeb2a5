"""Validation of a composed config before any work starts: every key against the one schema that declares it.

No family, arch, data source or logger is named here: a node with a `_target_` is checked against its target's
signature (aelab/schema.py), the trainer against aelab/engine/options.py, a dataset's shared keys against
`DATA_KEYS`, and each command's own keys against its table below. A mistake becomes
`error: <key>: <problem> (<allowed>)`, naming the key the user typed (`noise`, not the `model.input_noise` that
interpolates it).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from aelab.engine.options import CHECKPOINTS, DEVICES, TrainerOptions
from aelab.errors import UserError
from aelab.metrics.directions import MODES
from aelab.schema import Annotated, OneOf, Range, check_against, check_target, check_value, signature_of

SPLITS = ("train", "val", "test")  # the splits every dataset has (DataModule.train/.val/.test)
INTERPOLATION_METHODS = ("lerp", "slerp")
PICK_BY = ("index", "class")  # what from/to/style_from name: an index of the split, or a class
THREADS = Annotated[Literal["auto"] | int, Range(1, None)]
COUNT = Annotated[int, Range(0, None)]
POSITIVE = Annotated[int, Range(1, None)]
OPTIONAL_CLASS = Annotated[int | None, Range(0, None)]

# Arguments the code passes to a target itself: a config key of that name is refused.
PROVIDED = {
    "model": ("arch", "input_shape", "num_classes"),
    "logger": ("log_dir", "start_step"),
    "trainer.optimizer": ("params",),
    "trainer.scheduler": ("optimizer",),
}
GROUPS = ("data", "model", "arch", "trainer", "logger")  # config groups: nodes with schemas of their own

RUN_KEYS: dict[str, Any] = {  # every command that opens a run or starts one
    "device": Annotated[str, OneOf(DEVICES)],
    "seed": COUNT,
    "batch_size": POSITIVE,
    "threads": THREADS,
}
TRAIN_KEYS: dict[str, Any] = {
    **RUN_KEYS,
    "latent_dim": POSITIVE,
    "beta": Annotated[float, Range(0, None)],
    "noise": Annotated[float, Range(0, None)],
    "epochs": COUNT,
    "lr": Annotated[float, Range(0, None, low_open=True)],
    "resume": str | None,
    "objective": str | None,
    "sweep_eval": dict | None,
    "sweep_eval.overrides": list[str],
    "sweep_eval.y": str | None,
    "sweep_eval.metrics": list[str] | None,
}
FROM_RUN_KEYS: dict[str, Any] = {**RUN_KEYS, "run": str | None, "ckpt": Annotated[str, OneOf(CHECKPOINTS)],
                                 "split": Annotated[str, OneOf(SPLITS)], "tensorboard": bool}
EVAL_KEYS: dict[str, Any] = {
    **FROM_RUN_KEYS,
    "num_images": COUNT,
    "iw_samples": COUNT,
    "iw_examples": Annotated[int | None, Range(1, None)],
    "noise": Annotated[list[float], Range(0, None)],
    "probe.max_train": Annotated[int | None, Range(0, None)],
    "probe.neighbors": POSITIVE,
    "anomaly.normal": Annotated[list[int] | None, Range(0, None)],
    "anomaly.outliers": str | dict | None,
    "generation.samples": COUNT,
    "generation.epochs": POSITIVE,
    "generation.prior": str,  # one of SAMPLE_PRIORS: checked by _sample_prior (the tuple lives beside torch code)
    "disentanglement.enabled": bool,
    "disentanglement.num_train": Annotated[int, Range(2, None)],
    "disentanglement.num_eval": Annotated[int, Range(2, None)],
    "disentanglement.batch_size": Annotated[int, Range(2, None)],
    "disentanglement.variance_points": Annotated[int, Range(2, None)],
    "disentanglement.bins": Annotated[int, Range(2, None)],
    "disentanglement.dci_estimator": str,  # one of DCI_ESTIMATORS: checked by _one_of
    "disentanglement.sap_continuous": bool,
    "views.points": Annotated[int, Range(2, None)],
    "views.tsne": COUNT,
    "views.grid_size": Annotated[int, Range(2, None)],
    "views.files": bool,
}
SAMPLE_KEYS: dict[str, Any] = {
    **FROM_RUN_KEYS,
    "n": POSITIVE,
    "prior": str,  # one of SAMPLE_PRIORS: checked by _sample_prior
    "grid_size": Annotated[int, Range(2, None)],
    "span": tuple[float, float] | None,
    "y": OPTIONAL_CLASS,
    "label": OPTIONAL_CLASS,
    "per_class": POSITIVE,
    "style_from": OPTIONAL_CLASS,
    "by": Annotated[str, OneOf(PICK_BY)],
}
INTERPOLATE_KEYS: dict[str, Any] = {
    **FROM_RUN_KEYS,
    "from": COUNT,
    "to": COUNT,
    "by": Annotated[str, OneOf(PICK_BY)],
    "from_label": OPTIONAL_CLASS,
    "to_label": OPTIONAL_CLASS,
    "pairs": COUNT,
    "steps": Annotated[int, Range(2, None)],
    "method": Annotated[str, OneOf(INTERPOLATION_METHODS)],
    "gif": bool,
    "frames": Annotated[int | None, Range(2, None)],
    "frame_ms": Annotated[int, Range(10, None)],
    "arithmetic": str | int | None,
}
REPORT_KEYS: dict[str, Any] = {
    "dir": str | None,
    "y": str,
    "x": str | None,
    "metrics": list[str],
    "seed_key": str,
    "out": str | None,
    "mode": Annotated[str, OneOf(MODES)],
}
# A dataset's own keys; its source (data.source) is a _target_ node. Keys the source reads by interpolation
# (csv's data.path -> data.source.path) are checked with the source's annotation.
DATA_KEYS: dict[str, Any] = {
    "val_fraction": Annotated[float, Range(0, 0.9)],
    "test_fraction": Annotated[float, Range(0, 0.9)],
    "split_seed": COUNT,
    "num_workers": COUNT,
    "likelihood": str,  # its values: models/likelihoods.py's LIKELIHOODS (imported when a dataset is checked)
    "source": dict,
}

ARITHMETIC = re.compile(r"([+-]?)\s*(\d+)")  # signed terms of "a - b + c"
ARITHMETIC_WHOLE = re.compile(r"^\s*[+-]?\s*\d+(\s*[+-]\s*\d+)*\s*$")
_REFERENCE = re.compile(r"^\$\{(\.*)([\w.]+)\}$")  # ${key}, ${..key}: a plain reference to another key


def _select(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


_ABSENT = object()


def check_keys(values: Mapping[str, Any], table: Mapping[str, Any], prefix: str = "",
               allow: tuple[str, ...] = ()) -> None:
    """Each key of the table that is present against its annotation; a top-level key nobody declares is refused."""
    for key, annotation in table.items():
        value = _select(values, key, _ABSENT)
        if value is not _ABSENT:
            check_value(prefix + key, value, annotation)
    declared = {k.split(".", 1)[0] for k in table} | set(allow)
    for key, value in values.items():
        if key not in declared:
            raise UserError(prefix + str(key), "unknown key", "keys: " + ", ".join(sorted(declared)))
        nested = [k.split(".", 1)[1] for k in table if k.startswith(f"{key}.")]
        if nested and isinstance(value, Mapping):
            for inner in value:
                if inner not in nested:
                    raise UserError(f"{prefix}{key}.{inner}", "unknown key", "keys: " + ", ".join(nested))


def _target_nodes(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    """(key, node) of every node with a `_target_`, outermost first."""
    found = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            path = f"{prefix}{key}"
            if "_target_" in value:
                found.append((path, value))
            found += _target_nodes(value, path + ".")
    return found


def check_data(data: Mapping[str, Any] | None, key: str = "data") -> None:
    if not isinstance(data, Mapping):
        return
    source = data.get("source")
    aliases: dict[str, Any] = {}
    if isinstance(source, Mapping) and "_target_" in source:
        from aelab.schema import resolve_target

        params, hints, _ = signature_of(resolve_target(str(source["_target_"]), f"{key}.source"))
        aliases = {n: hints.get(n, Any) for n in params if n in data and n not in DATA_KEYS}
    from aelab.models.likelihoods import LIKELIHOODS  # torch: only where a dataset is configured

    likelihood = {"likelihood": Annotated[str, OneOf(LIKELIHOODS)]}
    check_keys(data, {**DATA_KEYS, **likelihood, **aliases}, prefix=f"{key}.")
    val, test = data.get("val_fraction", 0), data.get("test_fraction", 0)
    if isinstance(val, (int, float)) and isinstance(test, (int, float)) and val + test >= 1:
        raise UserError(f"{key}.val_fraction", f"with {key}.test_fraction={test} it leaves no training examples",
                        f"{key}.val_fraction + {key}.test_fraction < 1")


def check_nodes(values: Mapping[str, Any]) -> None:
    """The trainer, the dataset and every `_target_` node (model, arch, data.source, logger, optimizer, ...)."""
    if isinstance(values.get("trainer"), Mapping):
        check_against(TrainerOptions, values["trainer"], "trainer")
    check_data(values.get("data"))
    for key, node in _target_nodes(values):
        check_target(node, key, provided=PROVIDED.get(key, ()))


def check_run_dir(cfg: Mapping[str, Any], key: str, required: bool) -> None:
    """A training run directory given on the command line must exist and hold a checkpoint."""
    value = _select(cfg, key)
    if value in (None, ""):
        if required:
            raise UserError(key, "no run directory given", f"{key}=outputs/<date>/<time>_<model>")
        return
    run = Path(str(value)).expanduser()
    if not run.is_dir():
        raise UserError(key, f"no such directory: {run}", "a run directory written by `aelab train`")
    if not (run / "checkpoints" / "last.pt").is_file():
        raise UserError(key, f"{run} holds no checkpoints/last.pt", "a run directory written by `aelab train`")


def check_data_name(cfg: Mapping[str, Any], key: str) -> None:
    """A dataset name (conf/data/<name>.yaml) or {name: <name>, ...} with options to change."""
    from importlib import resources

    value = _select(cfg, key)
    if value is None:
        return
    name = value.get("name") if isinstance(value, Mapping) else value
    options = sorted(p.name[:-5] for p in (resources.files("aelab.conf") / "data").iterdir() if p.name.endswith(".yaml"))
    if name not in options:
        raise UserError(key, f"unknown dataset {name!r}", "one of: " + ", ".join(options) + ", or {name: folder, source: {path: DIR}}")


def _resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain values (interpolations resolved); a broken interpolation is one line."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise UserError(str(key), str(exc).strip().splitlines()[0]) from None


def user_key(cfg: DictConfig | Mapping[str, Any], key: str) -> str:
    """The key a value was really set by: model.input_noise is `${noise}`, so a bad value there is `noise`'s."""
    if not isinstance(cfg, DictConfig):
        return key
    for _ in range(8):  # chains of references are short; a cycle would not resolve in the first place
        parent, _, leaf = key.rpartition(".")
        try:
            container = OmegaConf.select(cfg, parent) if parent else cfg
            node = container._get_node(leaf) if isinstance(container, DictConfig) else None
        except Exception:
            return key
        if node is None or not node._is_interpolation():
            return key
        match = _REFERENCE.match(str(node._value()))
        if not match:
            return key
        dots, target = match.groups()
        base = parent.split(".") if parent else []
        if dots:
            base = base[: len(base) - (len(dots) - 1)] if len(dots) > 1 else base
            key = ".".join([*base, target])
        else:
            key = target
    return key


def _checked(table: Mapping[str, Any], groups: tuple[str, ...] = (),
             first: tuple[Callable[[dict[str, Any]], None], ...] = (),
             then: tuple[Callable[[dict[str, Any]], None], ...] = ()) -> Callable[[DictConfig], None]:
    """The check of one command: `first` (the run it reads), its keys, its groups' nodes, `then` (rules across keys).
    A config that passed is not checked again in this process: the CLI's pre-check and the command's own run() (which
    checks for callers from Python) see the same config, and it is validated once."""
    def check(cfg: DictConfig | Mapping[str, Any]) -> None:
        values = _resolved(cfg)
        seen = (id(check), json.dumps(values, sort_keys=True, default=str))
        if seen in _PASSED:
            return
        try:
            for rule in first:
                rule(values)
            check_keys(values, table, allow=groups)
            check_nodes({k: v for k, v in values.items() if k in groups})
            for rule in then:
                rule(values)
        except UserError as error:
            error.key = user_key(cfg, error.key)
            error.args = (error.line(),)
            raise
        _PASSED.add(seen)
    return check


_PASSED: set[tuple[int, str]] = set()  # (check, config) pairs validated in this process


def _objective(values: dict[str, Any]) -> None:
    objective = values.get("objective")
    if objective is not None and not str(objective).startswith(("val/", "train/")):
        raise UserError("objective", f"unknown metric {objective!r}", "a final metric such as val/loss or val/recon")


def _resume(values: dict[str, Any]) -> None:
    check_run_dir(values, "resume", required=False)


def _run(values: dict[str, Any]) -> None:
    check_run_dir(values, "run", required=True)


def _outliers(values: dict[str, Any]) -> None:
    check_data_name(values, "anomaly.outliers")


def _span(values: dict[str, Any]) -> None:
    span = values.get("span")
    if span is not None and not span[0] < span[1]:
        raise UserError("span", f"got {span!r}", "two numbers low < high, e.g. span=[-3,3]")


def _arithmetic(values: dict[str, Any]) -> None:
    v = values.get("arithmetic")
    if v is not None and not ARITHMETIC_WHOLE.match(str(v)):
        raise UserError("arithmetic", f"cannot read {v!r}",
                        'indices (or classes with by=class) joined by + and -, e.g. arithmetic="3 - 5 + 9"')


def _report_dir(values: dict[str, Any]) -> None:
    """The folder must exist and hold at least one run (torch-free: the runs are found by their files)."""
    from aelab.sweep.runs import find_runs

    value = values.get("dir")
    if value in (None, ""):
        raise UserError("dir", "no folder given", "aelab report multirun/<date>/<time>, or dir=<folder>")
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise UserError("dir", f"no such directory: {root}", "a sweep folder (multirun/<date>/<time>) or outputs/")
    if not find_runs(root):
        raise UserError("dir", f"no runs under {root}", "folders written by aelab train, with .hydra/ or metrics.json")


def _one_of(key: str, module: str, name: str, required: bool = False) -> Callable[[dict[str, Any]], None]:
    """A key whose allowed values are a tuple living beside torch code (`module`.`name`, the one the code uses):
    imported only when the key is checked, so a command that never reads it stays torch-free."""
    def check(values: dict[str, Any]) -> None:
        value = _select(values, key)
        if value is None and not required:
            return
        import importlib

        check_value(key, value, Annotated[str, OneOf(getattr(importlib.import_module(module), name))])
    return check


_sample_prior = functools.partial(_one_of, module="aelab.models.fitted_prior", name="SAMPLE_PRIORS")


check_train = _checked(TRAIN_KEYS, GROUPS, then=(_resume, _objective))
check_eval = _checked(EVAL_KEYS, ("data",), first=(_run,),
                      then=(_outliers, _sample_prior("generation.prior"),
                            _one_of("disentanglement.dci_estimator", "aelab.metrics.disentanglement", "DCI_ESTIMATORS")))
check_sample = _checked(SAMPLE_KEYS, ("data",), first=(_run,), then=(_span, _sample_prior("prior")))
check_interpolate = _checked(INTERPOLATE_KEYS, ("data",), first=(_run,), then=(_arithmetic,))
check_report = _checked(REPORT_KEYS, first=(_report_dir,))



# aelab fit-prior (aelab/commands/fit_prior.py): its keys, and the prior checked against the one list of fitted densities
FIT_PRIOR_KEYS: dict[str, Any] = {**RUN_KEYS, "run": str | None, "ckpt": Annotated[str, OneOf(CHECKPOINTS)],
                                  "prior": str, "components": POSITIVE, "max_codes": Annotated[int | None, Range(2, None)],
                                  "epochs": POSITIVE, "lr": Annotated[float, Range(0, None, low_open=True)]}


check_fit_prior = _checked(FIT_PRIOR_KEYS, (), (_run, _one_of("prior", "aelab.models.fitted_prior", "FITTED_PRIORS",
                                                                       required=True)))


# aelab traverse (aelab/commands/traverse.py)
TRAVERSE_KEYS: dict[str, Any] = {
    **FROM_RUN_KEYS,
    "index": COUNT,
    "span": tuple[float, float] | None,
    "steps": Annotated[int, Range(2, None)],
    "dims": Annotated[int | None, Range(1, None)],
    "frame_ms": Annotated[int, Range(10, None)],
}
check_traverse = _checked(TRAVERSE_KEYS, ("data",), first=(_run,), then=(_span,))


# aelab encode / reconstruct / score / export (aelab/commands/): a trained run applied to data of the user's
APPLY_SPLITS = ("all", *SPLITS)  # all: every example in the data's own order, nothing carved or shuffled
SCORES = ("recon_nll", "neg_elbo", "nll_iw")  # the anomaly scores of aelab score, the first for every family
EXPORT_FORMATS = ("torchscript", "onnx")
APPLY_KEYS: dict[str, Any] = {**FROM_RUN_KEYS, "split": Annotated[str, OneOf(APPLY_SPLITS)]}
ENCODE_KEYS: dict[str, Any] = {**APPLY_KEYS}
RECONSTRUCT_KEYS: dict[str, Any] = {**APPLY_KEYS, "out": str | None, "preview": COUNT}
SCORE_KEYS: dict[str, Any] = {
    **APPLY_KEYS,
    "out": str | None,
    "iw_samples": COUNT,
    "elbo_samples": POSITIVE,
    "threshold.quantile": Annotated[float, Range(0, 1)],
    "threshold.value": float | None,
    "threshold.score": Annotated[str, OneOf(SCORES)],
}
EXPORT_KEYS: dict[str, Any] = {**FROM_RUN_KEYS, "format": Annotated[str, OneOf(EXPORT_FORMATS)]}
check_encode = _checked(ENCODE_KEYS, ("data",), first=(_run,))
check_reconstruct = _checked(RECONSTRUCT_KEYS, ("data",), first=(_run,))
check_score = _checked(SCORE_KEYS, ("data",), first=(_run,))
check_export = _checked(EXPORT_KEYS, first=(_run,))


# aelab explore (aelab/commands/explore.py): a local server for a run's latent space; it writes nothing
EXPLORE_KEYS: dict[str, Any] = {
    **{k: v for k, v in FROM_RUN_KEYS.items() if k != "tensorboard"},
    "points": POSITIVE,
    "prior": str,  # one of SAMPLE_PRIORS or none: checked by _explore_prior
    "prior_points": COUNT,
    "method": Annotated[str, OneOf(INTERPOLATION_METHODS)],
    "steps": Annotated[int, Range(2, 64)],
    "port": Annotated[int, Range(0, 65535)],
    "open": bool,
}


def _explore_prior(values: dict[str, Any]) -> None:
    from aelab.models.fitted_prior import SAMPLE_PRIORS

    check_value("prior", values.get("prior"), Annotated[str, OneOf(("none", *SAMPLE_PRIORS))])


check_explore = _checked(EXPLORE_KEYS, ("data",), first=(_run,), then=(_explore_prior,))


def check_of(config_name: str) -> Callable[[DictConfig], None]:
    """The check of a command (aelab/commands/__init__.py): `check_<its config's name>` above."""
    return globals()[f"check_{config_name}"]
