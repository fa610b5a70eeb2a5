"""`aelab <command> [overrides]`: pick the command, check the overrides, hand argv to Hydra.

Kept light on purpose: `aelab --help` must not import torch.
"""

from __future__ import annotations

import importlib
import sys

from aelab.commands import COMMANDS  # each command declared once: name, help; the rest follows from the name

# Hydra flags that print or configure instead of running: hand them over unchecked.
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
               "--version", "--resolve", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun"}

USAGE = """usage: aelab <command> [key=value ...] [-m] [--help] [--cfg job]

aelab trains and explores autoencoders; configs are Hydra YAML (conf/), every
option is an override like latent_dim=2.

commands:
{commands}

examples:
  aelab train model=vae latent_dim=2                 # -> outputs/<date>/<time>_vae/
  aelab train -m model=ae,vae latent_dim=2,8         # a sweep -> multirun/<date>/<time>/
  aelab report multirun/<date>/<time>                # the sweep as one table, report.md/csv, a plot
  aelab eval run=outputs/<date>/<time>_vae
  tensorboard --logdir outputs

`aelab <command> --help` lists that command's config groups and keys.
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {c.name:<{width}}  {c.help}" for c in COMMANDS.values()))


def report_dir_override(args: list[str]) -> list[str]:
    """`aelab report <dir>` -> `dir='<dir>'`: the first bare word (or existing folder, whose job names hold
    `=` and `,`) becomes the quoted Hydra key."""
    from pathlib import Path

    for i, arg in enumerate(args):
        if not arg.startswith("-") and ("=" not in arg or Path(arg).is_dir()):
            quoted = arg.replace("\\", "\\\\").replace("'", "\\'")
            return [*args[:i], f"dir='{quoted}'", *args[i + 1 :]]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] == "--version":
        from aelab import __version__

        print(f"aelab {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: command: unknown command {command!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        sys.exit(2)
    if command == "report":
        rest = report_dir_override(rest)
    declared = COMMANDS[command]
    if not HYDRA_FLAGS.intersection(a.split("=", 1)[0] for a in rest):
        from aelab.precheck import precheck

        precheck(declared.config, rest)
    module = importlib.import_module(declared.module)
    sys.argv = [f"aelab {declared.config}", *rest]
    module.main()


def entry() -> None:
    """The `aelab` command (and `python -m aelab`): main(), then a successful command's quick exit
    (aelab/quick_exit.py)."""
    from aelab.quick_exit import exit_quickly

    try:
        main()
    except SystemExit as stop:
        exit_quickly(stop.code)
    exit_quickly(0)


if __name__ == "__main__":
    entry()
