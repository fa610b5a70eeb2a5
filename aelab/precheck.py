"""Compose the command's config with the user's overrides before Hydra starts any work.

Hydra reports composition mistakes as several lines (and creates a run directory
first); here each becomes `error: <key>: <problem> (<allowed>)` and exit status 2.
"""

from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aelab.config_check import check_of
from aelab.errors import UserError, exit_with, full_errors_requested
from aelab.files import why_not_writable

MULTIRUN_FLAGS = {"-m", "--multirun"}
MAX_COMBINATIONS = 256
# Hydra configs that optional extras bring: a missing one is an install hint, not an unknown option.
PLUGINS = {
    "hydra/launcher/joblib": ("hydra-joblib-launcher", "sweep"),
    "hydra/launcher/submitit_slurm": ("hydra-submitit-launcher", "slurm"),
    "hydra/launcher/submitit_local": ("hydra-submitit-launcher", "slurm"),
    "hydra/sweeper/optuna": ("hydra-optuna-sweeper", "search"),
    "hydra/sweeper/sampler/tpe": ("hydra-optuna-sweeper", "search"),
}
SEARCHPATH = "hydra.searchpath="
SWEEPER_PARAMS = "hydra.sweeper.params."
HYDRA_GROUP = re.compile(r"^\+?hydra/(launcher|sweeper)=")


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(node, DictConfig):
            keys += _leaf_keys(node, full + ".")
    return keys


def translate(exc: Exception, known_keys: list[str]) -> UserError:
    """One line for the Hydra / OmegaConf errors a command line can cause."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(exc)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file in PLUGINS:
        group, option = exc.missing_cfg_file.rsplit("/", 1)
        package, extra = PLUGINS[exc.missing_cfg_file]
        return UserError(group, f"{option!r} needs the {package} plugin", f"pip install 'aelab[{extra}]'")
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, option = exc.missing_cfg_file.rsplit("/", 1)
        options = ", ".join(exc.options or [])
        return UserError(group, f"unknown option {option!r}", f"one of: {options}" if options else None)
    if isinstance(exc, OverrideParseException):
        return UserError("override", f"cannot parse {exc.override!r}", "write key=value, e.g. latent_dim=2")
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if match:
        key = match.group(1)
        close = difflib.get_close_matches(key, known_keys, n=1)
        hint = f"did you mean {close[0]}?" if close else f"add a new key with +{key}=..."
        return UserError(key, "unknown key", hint)
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    return UserError("config", first.strip())


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to check: one, or for -m each swept value (all combinations when few)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun or not any(o.is_sweep_override() for o in parsed):
        return [overrides]
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    total = 1
    for c in choices:
        total *= len(c)
    if total <= MAX_COMBINATIONS:
        return [list(combo) for combo in itertools.product(*choices)]
    # too many to compose one by one: vary one key at a time around the first values
    firsts = [c[0] for c in choices]
    return [firsts[:i] + [v] + firsts[i + 1 :] for i, c in enumerate(choices) for v in c]


def check_sweeper_params(overrides: list[str]) -> None:
    """`hydra.sweeper.params.<key>=a,b` unquoted parses as a sweep over Hydra's own config, which Hydra refuses with
    "Sweeping over Hydra's configuration is not supported" and no word of the fix: the sweeper wants its values as
    one string, `'a,b'`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for arg in overrides:
        if not arg.lstrip("+").startswith(SWEEPER_PARAMS):
            continue
        try:
            (parsed,) = OverridesParser.create().parse_overrides([arg])
        except OverrideParseException:
            continue  # compose reports it as an unparsable override
        if parsed.is_sweep_override():
            key, values = parsed.get_key_element().lstrip("+"), arg.split("=", 1)[1]
            quoted = '"' + f"{key}='{values}'" + '"'  # Hydra's quotes inside the shell's
            raise UserError(key, "the sweeper takes its values as one quoted string", quoted)


def compose_checked(command: str, overrides: list[str]) -> list[DictConfig]:
    """Compose and validate; raises UserError."""
    check_sweeper_params(overrides)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import aelab.sweep.rundirs  # noqa: F401  (registers the resolvers the configs use)

    multirun = any(a in MULTIRUN_FLAGS for a in overrides)
    # hydra.* overrides configure Hydra, not the job; hydra.searchpath adds config folders (a family's YAML) the job needs
    user = [a for a in overrides if a not in MULTIRUN_FLAGS
            and (not a.lstrip("+~").startswith("hydra") or a.lstrip("+").startswith(SEARCHPATH))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            try:
                runs = _expand(user, multirun)
                cfgs = [compose(config_name=command, overrides=o) for o in runs]
                for cfg in cfgs:  # surfaces bad interpolations now, not mid-run; the checks read the references
                    OmegaConf.to_container(cfg, resolve=True)
                launcher = [a for a in overrides if HYDRA_GROUP.match(a)]  # hydra/launcher=joblib: installed?
                if launcher:
                    compose(config_name=command, overrides=launcher, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as exc:
                known = _leaf_keys(compose(config_name=command))
                raise translate(exc, known) from None
    finally:
        GlobalHydra.instance().clear()
    for cfg, run in zip(cfgs, runs):
        check_of(command)(cfg)
        if command == "train":
            check_shared_keys(cfg, run)
    check_output_dir(command, overrides, multirun)
    return cfgs


def given_values(overrides: list[str], key: str) -> list[str]:
    """The values the command line gives `key` (`key=v` or `+key=v`), in order, quotes stripped."""
    return [a.split("=", 1)[1].strip("'\"") for a in overrides if "=" in a and a.lstrip("+").split("=", 1)[0] == key]


def check_shared_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """A shared knob (beta, noise, latent_dim) set on the command line for a family that does not read it is
    refused in one line: `aelab train model=ae beta=4` would otherwise train the same run and say nothing, and a
    sweep over beta would train identical jobs for such families (so a sweep is refused too, naming the job)."""
    from importlib.resources import files

    from aelab.schema import SHARED_KEYS, shared_keys_read

    ignored = [k for k in SHARED_KEYS if given_values(overrides, k) and k not in shared_keys_read(cfg.model)]
    if not ignored:
        return
    key = ignored[0]
    family = (given_values(overrides, "model") or [str(cfg.model._target_).rsplit(".", 1)[-1]])[-1]
    readers = sorted(p.name.removesuffix(".yaml") for p in (files("aelab.conf") / "model").iterdir()
                     if p.name.endswith(".yaml") and key in shared_keys_read(p.read_text()))
    raise UserError(key, f"model={family} does not read it (setting it would change nothing)",
                    "leave it out, or use a family that reads it: " + ", ".join(readers))


def check_output_dir(command: str, overrides: list[str], multirun: bool) -> None:
    """The folder a training run (or sweep) will write must be creatable, and a resumed run's own folder
    writable: else Hydra fails with a traceback, or the run trains and then cannot save. (The other commands
    check their outputs when they open the run: aelab/commands/session.py.)"""
    if command != "train":
        return
    resume = given_values(overrides, "resume")
    if resume and resume[-1] not in ("", "null"):
        problem = why_not_writable(Path(resume[-1]).expanduser() / "checkpoints")
        if problem:
            raise UserError("resume", problem, "a run folder you can write: its checkpoints are written there")
        return  # a resumed run writes into its own folder, not a new one
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = given_values(overrides, key)
    value = given[-1] if given else ("multirun" if multirun else "outputs")
    static = Path(value.split("${", 1)[0] or ".")  # the part before any ${now:...} is what must exist or be made
    problem = why_not_writable(static)
    if problem:
        raise UserError(key if given else "output", problem, f"{key}=<a folder you can write>")


def precheck(command: str, overrides: list[str]) -> None:
    try:
        compose_checked(command, overrides)
    except UserError as error:
        if full_errors_requested():
            raise
        exit_with(error)
