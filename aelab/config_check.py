"""Validation of a composed config before any work starts: every key against the one place that declares it.

Where a command's keys are declared: in its YAML, conf/<command>.yaml, and only there. The YAML lists every key
with its default and the comment users read; the check's table follows from it (`command_keys`): a key's type is
its default's (an integer, a number, true/false, a string, a list of them, a section of keys; null: a string or
null). What a default cannot say is written below by key name, and nothing else: `SHARED` for keys that mean the
same in every command having them (seed, device, threads, ...), `CONSTRAINTS[<command>]` for the rest. A `Range`
or `OneOf` narrows the default's type; any other annotation replaces it (a null default that holds a number, an
"auto or an integer"). To add a key: add it to the YAML (and to its `--help` footer's "Keys:" line, which the
suite holds to the YAML); add a line here only for a range, a set of choices, or a type its default does not show.
A constraint naming a key its YAML lacks is refused (`declaration_problems`: tests/test_command_keys.py).

No family, arch, data source or logger is named here: a node with a `_target_` is checked against its target's
signature (aelab/schema.py), the trainer against aelab/engine/options.py, a dataset's shared keys against
`DATA_KEYS`. A mistake becomes `error: <key>: <problem> (<allowed>)`, naming the key the user typed (`noise`, not
the `model.input_noise` that interpolates it).
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
APPLY_SPLITS = ("all", *SPLITS)  # encode/reconstruct/score: all is every example in the data's own order
INTERPOLATION_METHODS = ("lerp", "slerp")
PICK_BY = ("index", "class")  # what from/to/style_from name: an index of the split, or a class
SCORES = ("recon_nll", "neg_elbo", "nll_iw")  # the anomaly scores of aelab score, the first for every family
EXPORT_FORMATS = ("torchscript", "onnx")
THREADS = Annotated[Literal["auto"] | int, Range(1, None)]
OPTIONAL_CLASS = Annotated[int | None, Range(0, None)]
COUNT, POSITIVE, AT_LEAST_2 = Range(0, None), Range(1, None), Range(2, None)

# Arguments the code passes to a target itself: a config key of that name is refused.
PROVIDED = {
    "model": ("arch", "input_shape", "num_classes"),
    "logger": ("log_dir", "start_step"),
    "trainer.optimizer": ("params",),
    "trainer.scheduler": ("optimizer",),
}
GROUPS = ("data", "model", "arch", "trainer", "logger")  # config groups: nodes with schemas of their own

# ---- what a command key's default cannot say (the keys themselves: conf/<command>.yaml) ----------------------
SHARED: dict[str, Any] = {  # the same meaning in every command whose YAML has the key
    "device": OneOf(DEVICES),
    "seed": COUNT,
    "batch_size": POSITIVE,
    "threads": THREADS,
    "ckpt": OneOf(CHECKPOINTS),
    "split": OneOf(SPLITS),
    "lr": Range(0, None, low_open=True),
    "span": tuple[float, float] | None,  # checked low < high by _span
    "steps": AT_LEAST_2,
    "frame_ms": Range(10, None),
    "by": OneOf(PICK_BY),
    "method": OneOf(INTERPOLATION_METHODS),
}
CONSTRAINTS: dict[str, dict[str, Any]] = {  # by command (its config's name), over SHARED
    "train": {
        "latent_dim": POSITIVE, "beta": Range(0, None), "noise": Range(0, None), "epochs": COUNT,
        "sweep_eval": dict | None, "sweep_eval.overrides": list[str], "sweep_eval.y": str | None,
        "sweep_eval.metrics": list[str] | None,
    },
    "eval": {
        "num_images": COUNT, "iw_samples": COUNT, "iw_examples": Annotated[int | None, Range(1, None)],
        "noise": Range(0, None),
        "probe.max_train": Annotated[int | None, Range(0, None)], "probe.neighbors": POSITIVE,
        "anomaly.normal": Annotated[list[int] | None, Range(0, None)], "anomaly.outliers": str | dict | None,
        "generation.samples": COUNT, "generation.epochs": POSITIVE,  # generation.prior: _sample_prior
        **{f"disentanglement.{k}": AT_LEAST_2 for k in ("num_train", "num_eval", "batch_size", "variance_points",
                                                         "bins")},  # disentanglement.dci_estimator: _one_of
        "disentanglement.sampled_mig.samples": AT_LEAST_2,  # disentanglement.sampled_mig.factors: _one_of
        "views.points": AT_LEAST_2, "views.tsne": COUNT, "views.grid_size": AT_LEAST_2,
    },
    "sample": {  # prior: _sample_prior
        "n": POSITIVE, "grid_size": AT_LEAST_2, "y": OPTIONAL_CLASS, "label": OPTIONAL_CLASS, "per_class": POSITIVE,
        "style_from": OPTIONAL_CLASS,
    },
    "interpolate": {
        "from": COUNT, "to": COUNT, "from_label": OPTIONAL_CLASS, "to_label": OPTIONAL_CLASS, "pairs": COUNT,
        "frames": Annotated[int | None, Range(2, None)], "arithmetic": str | int | None,  # _arithmetic reads it
    },
    "report": {"x": str | None, "mode": OneOf(MODES)},
    "fit_prior": {  # prior: _one_of FITTED_PRIORS
        "components": POSITIVE, "max_codes": Annotated[int | None, Range(2, None)], "epochs": POSITIVE,
        "layers": POSITIVE, "hidden": Annotated[list[int], Range(1, None)],
    },
    "traverse": {"index": COUNT, "dims": Annotated[int | None, Range(1, None)]},
    "encode": {"split": OneOf(APPLY_SPLITS)},
    "reconstruct": {"split": OneOf(APPLY_SPLITS), "preview": COUNT},
    "score": {
        "split": OneOf(APPLY_SPLITS), "iw_samples": COUNT, "elbo_samples": POSITIVE,
        "threshold.quantile": Range(0, 1), "threshold.value": float | None, "threshold.score": OneOf(SCORES),
    },
    "export": {"format": OneOf(EXPORT_FORMATS)},
    "explore": {  # prior: _explore_prior
        "points": POSITIVE, "prior_points": COUNT, "steps": Range(2, 64), "port": Range(0, 65535),
    },
}
NOT_KEYS = ("defaults", "hydra")  # a command YAML's instructions to Hydra


def default_type(value: Any) -> Any:
    """The type a key's YAML default gives it: a null default is an optional string, an interpolation anything."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return Any if "${" in value else str
    if value is None:
        return str | None
    if isinstance(value, Mapping):
        return dict
    if isinstance(value, (list, tuple)):
        kinds = {default_type(v) for v in value}
        if kinds and kinds <= {int, float}:
            return list[float] if float in kinds else list[int]
        if len(kinds) == 1 and kinds <= {bool, str}:
            return list[kinds.pop()]
        return list
    return Any


def yaml_defaults(text: str) -> dict[str, Any]:
    """key -> default of a command YAML, a section's keys dotted (probe.neighbors) beside the section itself."""
    node = OmegaConf.to_container(OmegaConf.create(text), resolve=False)

    def walk(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if prefix or key not in NOT_KEYS:
                out[prefix + str(key)] = value
                if isinstance(value, Mapping):
                    out.update(walk(value, f"{prefix}{key}."))
        return out
    return walk(node, "")  # type: ignore[arg-type]


def _narrowed(inferred: Any, constraint: Any) -> Any:
    if constraint is None:
        return inferred
    if isinstance(constraint, (Range, OneOf)):
        return Annotated[inferred, constraint]
    return constraint


def keys_table(defaults: Mapping[str, Any], constraints: Mapping[str, Any]) -> dict[str, Any]:
    """The check's table of a command: each key of its YAML with its default's type, narrowed by SHARED and by the
    command's constraints; plus the keys a constraint declares inside a section whose default is null (sweep_eval)."""
    table = {key: _narrowed(default_type(default), constraints.get(key, SHARED.get(key)))
             for key, default in defaults.items()}
    table.update({key: c for key, c in constraints.items() if key not in table})
    return table


def declaration_problems(defaults: Mapping[str, Any], constraints: Mapping[str, Any]) -> list[str]:
    """What is wrong with a command's constraints beside its YAML: a constraint for a key the YAML lacks (one for a
    key inside a section must have the section declared null in the YAML and given a type here), a Range or OneOf on
    a null default (its type must be written whole), a default its own constraint refuses."""
    problems = []
    for key, constraint in constraints.items():
        section = key.rpartition(".")[0]
        if key not in defaults and not (section in defaults and defaults[section] is None and section in constraints):
            problems.append(f"{key}: constrained, but no such key in the YAML")
        elif key in defaults and defaults[key] is None and isinstance(constraint, (Range, OneOf)):
            problems.append(f"{key}: a {type(constraint).__name__} on a null default (write its whole type)")
    table = keys_table(defaults, constraints)
    for key, default in defaults.items():
        if not (isinstance(default, str) and "${" in default):
            try:
                check_value(key, default, table[key])
            except UserError as error:
                problems.append(f"{key}: its default is refused: {error.line()}")
    return problems


def command_yaml(config: str) -> str:
    """conf/<config>.yaml as installed (the package aelab.conf, where Hydra reads it)."""
    from importlib import resources

    return (resources.files("aelab.conf") / f"{config}.yaml").read_text(encoding="utf-8")


@functools.cache
def command_keys(config: str) -> dict[str, Any]:
    """The table a command's keys are checked against: conf/<config>.yaml's keys, typed as above."""
    defaults = yaml_defaults(command_yaml(config))
    constraints = CONSTRAINTS.get(config, {})
    problems = declaration_problems(defaults, constraints)
    if problems:  # a mistake of aelab's own, not the user's: the suite fails on it (tests/test_command_keys.py)
        raise RuntimeError(f"aelab/config_check.py CONSTRAINTS[{config!r}] and conf/{config}.yaml disagree: "
                           + "; ".join(problems))
    return keys_table(defaults, constraints)


# A dataset's own keys; its source (data.source) is a _target_ node. Keys the source reads by interpolation
# (csv's data.path -> data.source.path) are checked with the source's annotation.
DATA_KEYS: dict[str, Any] = {
    "val_fraction": Annotated[float, Range(0, 0.9)],
    "test_fraction": Annotated[float, Range(0, 0.9)],
    "split_seed": Annotated[int, COUNT],
    "num_workers": Annotated[int, COUNT],
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


def _checked(config: str, groups: tuple[str, ...] = (),
             first: tuple[Callable[[dict[str, Any]], None], ...] = (),
             then: tuple[Callable[[dict[str, Any]], None], ...] = ()) -> Callable[[DictConfig], None]:
    """The check of one command: `first` (the run it reads), its keys (`command_keys(config)`: conf/<config>.yaml's),
    its groups' nodes, `then` (rules across keys).
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
            check_keys(values, command_keys(config), allow=groups)
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


check_train = _checked("train", GROUPS, then=(_resume, _objective))
check_eval = _checked("eval", ("data",), first=(_run,),
                      then=(_outliers, _sample_prior("generation.prior"),
                            _one_of("disentanglement.dci_estimator", "aelab.metrics.disentanglement", "DCI_ESTIMATORS"),
                            _one_of("disentanglement.sampled_mig.factors", "aelab.metrics.sampled_mig", "FACTOR_SETS")))
check_sample = _checked("sample", ("data",), first=(_run,), then=(_span, _sample_prior("prior")))
check_interpolate = _checked("interpolate", ("data",), first=(_run,), then=(_arithmetic,))
check_report = _checked("report", first=(_report_dir,))
check_fit_prior = _checked("fit_prior", (), (_run, _one_of("prior", "aelab.models.fitted_prior", "FITTED_PRIORS",
                                                               required=True)))
check_traverse = _checked("traverse", ("data",), first=(_run,), then=(_span,))
# encode / reconstruct / score / export (aelab/commands/_apply.py): a trained run applied to data of the user's
check_encode = _checked("encode", ("data",), first=(_run,))
check_reconstruct = _checked("reconstruct", ("data",), first=(_run,))
check_score = _checked("score", ("data",), first=(_run,))
check_export = _checked("export", first=(_run,))


def _explore_prior(values: dict[str, Any]) -> None:
    from aelab.models.fitted_prior import SAMPLE_PRIORS

    check_value("prior", values.get("prior"), Annotated[str, OneOf(("none", *SAMPLE_PRIORS))])


check_explore = _checked("explore", ("data",), first=(_run,), then=(_explore_prior,))  # a local server; writes nothing


def check_of(config_name: str) -> Callable[[DictConfig], None]:
    """The check of a command (aelab/commands/__init__.py): `check_<its config's name>` above."""
    return globals()[f"check_{config_name}"]
