"""Imports run downward: cli -> commands -> engine -> metrics, viz -> models -> nets, data -> the base modules
(errors, schema, instantiate).

Every import in the package counts, also those inside functions and under TYPE_CHECKING: a lazy import
upward is still a dependency upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aelab"

# layer of each top-level part of the package; a module may import its own layer and the ones below
LAYERS = {
    "cli": 6, "__main__": 6, "precheck": 6, "__init__": 6, "api": 6,  # api: aelab.load_run, aelab.train
    "commands": 5, "config_check": 5,  # the commands check their own config too (when called from Python)
    "engine": 4,
    "metrics": 3, "viz": 3, "sweep": 3,
    "models": 2,
    "nets": 1, "data": 1,
    "errors": 0, "schema": 0, "instantiate": 0, "files": 0,
}
# parts of one layer that must not lean on each other
SIBLINGS_APART = {("metrics", "viz"), ("viz", "metrics"), ("nets", "data"), ("data", "nets")}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("aelab.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aelab.") and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        source = rel.parts[0].removesuffix(".py")
        for line, module in _imports(path):
            edges.append((f"aelab/{rel}:{line}", source, _part(module)))
    return edges


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_imports_run_downward() -> None:
    upward = [f"{where}: {source} imports {target}" for where, source, target in _edges()
              if target in LAYERS and source != target
              and (LAYERS[target] > LAYERS[source] or (source, target) in SIBLINGS_APART)]
    assert not upward, "\n".join(upward)


def test_the_named_directions_of_the_design() -> None:
    edges = {(source, target) for _, source, target in _edges()}
    assert ("models", "viz") not in edges and ("data", "engine") not in edges and ("viz", "commands") not in edges
    outside = {source for source, target in edges if target == "commands"} - {"commands", "cli", "precheck", "__init__", "api"}
    assert not outside, f"only the front ends (CLI, Python API) and the commands import commands: {outside}"


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "aelab"
    (fake / "models").mkdir(parents=True)
    (fake / "viz").mkdir()
    for part in ("models", "viz"):
        (fake / part / "__init__.py").write_text("")
    (fake / "models" / "bad.py").write_text("def f():\n    from aelab.viz.images import grid\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert [(s, t) for _, s, t in _edges()] == [("models", "viz")]
