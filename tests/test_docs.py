"""The README and docs/ stay honest: every `aelab` command they show passes the command line's own checks (the
keys exist, the values are allowed, the groups and presets are there), every page they link exists, and the
README stays a front page."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from aelab.cli import COMMANDS, report_dir_override
from aelab.errors import UserError
from aelab.precheck import compose_checked
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
RUN_PLACEHOLDER = re.compile(r"outputs/<date>/<time>(?:_[\w.-]+)?|<(?:run|job)>")
SWEEP_PLACEHOLDER = re.compile(r"multirun/<date>/<time>(?:/[\w.=,<>-]+)?|<(?:dir|sweep)>")
SKIPPED = {  # what a command line may show that the pre-check cannot judge here
    "device=cuda": "no GPU here: a CUDA run is checked on a machine with one",
    "hydra.searchpath": "a user's own config folder: docs/extending.md's examples run in tests/test_extending.py",
}


def _plugin_missing(argv: list[str]) -> str | None:
    import importlib.util

    if "search=optuna" in argv and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        return "search=optuna needs the optional plugin (pip install 'aelab[search]')"
    return None


def _users_files(args: list[str], cwd: Path) -> None:
    """The files a command line names as the user's own (a CSV table, an image folder), made small in cwd."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "data.path" and value.endswith(".csv"):
            (cwd / value).write_text("a,b,c\n" + "".join(f"{i},{i * 2},{i % 3}\n" for i in range(12)))
        elif key == "data.source.path":
            from conftest import noise_images

            noise_images(cwd / value.rstrip("/"), 4)


def shown_commands(page: Path) -> list[tuple[str, list[str]]]:
    """Every `aelab <command> ...` line of the page's shell blocks (also after `torchrun ... -m`), as argv."""
    found = []
    for block in FENCE.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "aelab" not in words:
                continue
            argv = words[words.index("aelab") + 1:]
            if argv and argv[0] in COMMANDS:
                found.append((line.strip(), argv))
    return found


def _fake_run(run: Path) -> Path:
    """A folder the pre-check takes for a trained run (it checks the files are there, not what is in them)."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / "checkpoints" / "last.pt").touch()
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "metrics.json").write_text('{"val/recon": 1.0, "val/loss": 1.0}\n')
    return run


CASES = [(page, line, argv) for page in PAGES for line, argv in shown_commands(page)]


def test_the_pages_show_commands() -> None:
    assert len(CASES) >= 60, "the pages should show the commands they document"


@pytest.mark.parametrize("page, line, argv", CASES, ids=[f"{p.name}:{i}" for i, (p, _, _) in enumerate(CASES)])
def test_every_command_shown_passes_the_checks(tmp_path, monkeypatch, page: Path, line: str, argv: list[str]) -> None:
    skip = next((why for word, why in SKIPPED.items() if any(word in a for a in argv)), None) or _plugin_missing(argv)
    if skip:
        pytest.skip(skip)
    monkeypatch.chdir(tmp_path)
    run, sweep = _fake_run(tmp_path / "run"), tmp_path / "sweep"
    _fake_run(sweep / "0_model=vae")
    command = argv[0]
    args = [RUN_PLACEHOLDER.sub(str(run), SWEEP_PLACEHOLDER.sub(str(sweep), a)) for a in argv[1:]]
    _users_files(args, tmp_path)
    if command == "report":
        args = report_dir_override(args)
    flags = {"--help", "-h", "--cfg", "-c", "--info", "--hydra-help"}
    args = [a for a in args if a not in flags and not (args.index(a) > 0 and args[args.index(a) - 1] in ("--cfg", "-c"))]
    try:
        compose_checked(command.replace("-", "_"), args)
    except UserError as error:
        pytest.fail(f"{page.name}: `{line}` fails the checks: {error.line()}")


def test_every_page_linked_exists() -> None:
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(REPO)} -> {target}")
    assert not missing, missing


def test_the_readme_is_a_front_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"the README links every reference page: docs/{page.name}"


def test_the_commands_reference_lists_every_preset() -> None:
    """docs/commands.md's `experiment` row names every preset of conf/experiment/ (a new one is caught here)."""
    row = next(line for line in (REPO / "docs" / "commands.md").read_text().splitlines()
               if line.startswith("| `experiment` |"))
    listed = set(re.findall(r"`(\w+)`", row)) - {"experiment"}
    presets = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    assert presets - listed == set(), "add them to docs/commands.md's experiment row"
    assert listed - presets == set(), "no such preset in conf/experiment/"
