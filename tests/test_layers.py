"""Imports run downward, between the parts of the package and inside the parts that have a base.

Between parts (LAYERS; a module may import its own layer and the ones below):

    cli, __main__, precheck, __init__, api  ->  commands, config_check  ->  engine  ->  sweep  ->  metrics, viz
    ->  models  ->  nets, data  ->  errors, schema, instantiate, files, quick_exit

sweep has a place of its own: the commands and config_check use it and it reads metrics.directions, so
metrics (or viz) importing sweep fails, as does sweep importing the engine. Siblings of one layer that must not
lean on each other either way: metrics and viz, nets and data. An import of an aelab module whose part has no
layer fails too (a new part gets one, a typo is caught), as does a part of the package missing from LAYERS.

Inside a part (INSIDE: tiers of shared base modules, lowest first; the part's other modules form the top tier;
a module may import its own tier and the ones below, never a higher one):

    commands: _common -> results, examples -> session -> _apply, samplers -> the command modules (the base never
              imports a command)
    models:   likelihoods -> base, priors, mmd -> the families
    nets:     __init__ (the Arch protocol), fastpath -> linear, adapter -> the archs (mlp, conv)
    data:     base -> sources -> the data sources and the registry (__init__)
    engine:   options (torch-free: the pre-check reads it) -> the rest
    metrics:  directions (torch-free: the sweep report reads it) -> the metrics
    viz:      images, epoch_report -> views, writers, explore, live
    sweep:    naming -> the rest

What counts as an import: `import aelab.x`, `from aelab.x import y`, `from aelab import x`, relative imports
(`from ..x import y`, `from . import y`), and importlib.import_module / __import__ with a literal name or an
f-string whose literal start names the part (`f"aelab.commands.{name}"`: some module of aelab.commands, top tier).
Every one counts, also those inside functions and under TYPE_CHECKING: a lazy import upward is still a
dependency upward. The checker takes the package root, so each rule is also shown to catch a violation planted in
a small fake tree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aelab"

# layer of each top-level part of the package; a module may import its own layer and the ones below
LAYERS = {
    "cli": 7, "__main__": 7, "precheck": 7, "__init__": 7, "api": 7,  # api: aelab.load_run, aelab.train
    "commands": 6, "config_check": 6,  # the commands check their own config too (when called from Python)
    "engine": 5,
    "sweep": 4,  # torch-free sweep naming, job status and reports: used by commands, reads metrics.directions
    "metrics": 3, "viz": 3,
    "models": 2,
    "nets": 1, "data": 1,
    "errors": 0, "schema": 0, "instantiate": 0, "files": 0, "quick_exit": 0,
}
# parts of one layer that must not lean on each other
SIBLINGS_APART = {("metrics", "viz"), ("viz", "metrics"), ("nets", "data"), ("data", "nets")}
# the shared base of a part, in tiers (lowest first); the part's other modules are the top tier
INSIDE: dict[str, list[set[str]]] = {
    "commands": [{"_common"}, {"results", "examples"}, {"session"}, {"_apply", "samplers"}],
    "models": [{"likelihoods"}, {"base", "priors", "mmd"}],
    "nets": [{"__init__", "fastpath", "precision"}, {"linear", "adapter"}],
    "data": [{"base"}, {"sources"}],
    "engine": [{"options"}],
    "metrics": [{"directions"}],
    "viz": [{"images", "epoch_report"}],
    "sweep": [{"naming"}],
}
ANY = "*"  # the module an f-string names: some module of a package, unknown until run time


class Edge(NamedTuple):
    where: str  # aelab/<file>:<line>
    source: str  # dotted module, e.g. aelab.models.vae (a package is its __init__: aelab.models)
    target: str  # dotted module or package, or <package>.* for an f-string


def _is_module(root: Path, dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _literal_start(node: ast.expr) -> str | None:
    """The module a string argument names: the whole literal, or an f-string's literal start up to its last dot + *."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        start = str(node.values[0].value)
        return f"{start.rpartition('.')[0]}.{ANY}" if "." in start else None
    return None


def _dynamic_import(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and node.args:
        return _literal_start(node.args[0])
    return None


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted target) of every import of the package in one of its files."""
    package = root.name
    module = _module_name(root, path)
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]  # the package relative imports start in
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
                full = f"{origin}.{alias.name}"
                found.append((node.lineno, full if alias.name != "*" and _is_module(root, full) else origin))
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)):
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == package or name.startswith(package + ".")]


@functools.cache  # the real tree is read once for all its tests
def edges(root: Path = PACKAGE) -> tuple[Edge, ...]:
    return tuple(Edge(f"{root.name}/{path.relative_to(root)}:{line}", _module_name(root, path), target)
                 for path in sorted(root.rglob("*.py")) for line, target in imports(path, root))


def part(dotted: str) -> str:
    """The top-level part of the package a module belongs to (the package itself: __init__)."""
    names = dotted.split(".")
    return names[1] if len(names) > 1 else "__init__"


def _inner(dotted: str) -> str:
    """The module of its part a module is, or is inside of (aelab.viz.live.server -> live; aelab.nets -> __init__)."""
    names = dotted.split(".")
    return names[2] if len(names) > 2 else "__init__"


def _tier(part_name: str, inner: str) -> int:
    tiers = INSIDE[part_name]
    return next((i for i, names in enumerate(tiers) if inner in names), len(tiers))


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks a rule of the module docstring, as `where: what`."""
    found = []
    for where, source, target in edges(root):
        src, dst = part(source), part(target)
        if dst not in LAYERS:
            found.append(f"{where}: {source} imports {target}, a part of the package with no layer")
        elif not _is_module(root, target) and not target.endswith(f".{ANY}"):
            found.append(f"{where}: {source} imports {target}, which is no module of the package")
        elif src != dst and (LAYERS[dst] > LAYERS[src] or (src, dst) in SIBLINGS_APART):
            found.append(f"{where}: {src} imports {dst} ({source} -> {target}): upward")
        elif src == dst and src in INSIDE and _tier(src, _inner(target)) > _tier(src, _inner(source)):
            found.append(f"{where}: inside {src}, {_inner(source)} imports {_inner(target)} ({source} -> {target}): "
                         f"the base of {src} must not import what is built on it")
    return found


# ---- the real package ------------------------------------------------------------------------------
def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"
    assert set(LAYERS) <= parts, f"no such part of the package any more: {sorted(set(LAYERS) - parts)}"
    for name, tiers in INSIDE.items():
        inner = {p.name.removesuffix(".py") for p in (PACKAGE / name).iterdir() if p.suffix == ".py" or p.is_dir()}
        assert set().union(*tiers) <= inner, f"INSIDE[{name!r}] names modules that are not there"


def test_imports_run_downward() -> None:
    found = violations()
    assert not found, "\n".join(found)


def test_the_named_directions_of_the_design() -> None:
    found = {(part(source), part(target)) for _, source, target in edges()}
    assert ("models", "viz") not in found and ("data", "engine") not in found and ("viz", "commands") not in found
    outside = {s for s, t in found if t == "commands"} - {"commands", "cli", "precheck", "__init__", "api"}
    assert not outside, f"only the front ends (CLI, Python API) and the commands import commands: {outside}"


def test_the_checker_sees_every_kind_of_import() -> None:
    assert ("aelab.commands.session", "aelab.commands._common") in {(e.source, e.target) for e in edges()}
    assert ("aelab.cli", "aelab.commands") in {(e.source, e.target) for e in edges()}  # the declared commands
    # (cli imports a command's module by its declared name, Command.module: the commands package's own rule)


# ---- each rule catches a violation planted in a fake tree ---------------------------------------------
def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake package tmp_path/aelab holding files (paths below aelab/), each folder a package."""
    root = tmp_path / "aelab"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            (root / folder / "__init__.py").touch()
        path.write_text(text)
    return root


BASE = {"commands/train.py": "", "commands/_common.py": "", "commands/session.py": "", "models/base.py": "",
        "models/vae.py": "", "metrics/directions.py": "", "sweep/naming.py": "", "engine/trainer.py": "",
        "viz/images.py": ""}


@pytest.mark.parametrize("where, code, caught", [
    ("models/bad.py", "def f():\n    from aelab.viz.images import grid\n", "models imports viz"),
    ("models/bad.py", "from aelab import commands\n", "models imports commands"),
    ("models/bad.py", "import aelab.commands.train\n", "models imports commands"),
    ("models/bad.py", "from ..commands import train\n", "models imports commands"),
    ("models/bad.py", "from ..commands.train import run\n", "models imports commands"),
    ("models/bad.py", "import importlib\nimportlib.import_module('aelab.commands.train')\n", "models imports commands"),
    ("models/bad.py", "from importlib import import_module\nimport_module(f'aelab.commands.{x}')\n",
     "models imports commands"),
    ("commands/_common.py", "from aelab.commands.train import run\n", "inside commands, _common imports train"),
    ("commands/_common.py", "from aelab.commands import train\n", "inside commands, _common imports train"),
    ("commands/session.py", "from . import train\n", "inside commands, session imports train"),
    ("commands/session.py", "from .train import run\n", "inside commands, session imports train"),
    ("commands/_common.py", "from .session import open_run\n", "inside commands, _common imports session"),
    ("commands/_common.py", "import importlib\nimportlib.import_module(f'aelab.commands.{name}')\n",
     "inside commands, _common imports *"),
    ("models/base.py", "from aelab.models.vae import VAE\n", "inside models, base imports vae"),
    ("models/bad.py", "from aelab.priors import gmm\n", "aelab.priors, a part of the package with no layer"),
    ("models/bad.py", "from aelab.models.nothing import x\n", "aelab.models.nothing, which is no module"),
    ("metrics/bad.py", "from aelab.sweep.naming import SWEEP_FILE\n", "metrics imports sweep"),
    ("viz/bad.py", "from aelab.sweep import naming\n", "viz imports sweep"),
    ("sweep/bad.py", "from aelab.engine.trainer import Trainer\n", "sweep imports engine"),
    ("metrics/bad.py", "from aelab.viz.images import grid\n", "metrics imports viz"),
])
def test_a_planted_violation_is_caught(tmp_path: Path, where: str, code: str, caught: str) -> None:
    found = violations(plant(tmp_path, {**BASE, where: code}))
    assert len(found) == 1 and caught in found[0] and found[0].startswith(f"aelab/{where}:"), found


def test_the_allowed_directions_pass(tmp_path: Path) -> None:
    root = plant(tmp_path, {
        **BASE,
        "commands/train.py": "from . import session\nfrom ._common import x\nfrom aelab import sweep\n",
        "commands/session.py": "from aelab.commands._common import x\nfrom ..engine import trainer\n",
        "sweep/table.py": "from aelab.metrics.directions import MODES\nfrom .naming import x\n",
        "models/vae.py": "from aelab.models import base\nfrom . import base\n",
        "cli.py": "import importlib\nimportlib.import_module(f'aelab.commands.{c}')\n",
    })
    assert violations(root) == []
    assert len(edges(root)) == 10  # every import above was seen
