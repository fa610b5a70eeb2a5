"""The folders a run writes into, as the configs name them through three resolvers: `aelab_run_dir` (a fresh
run claims a folder nobody else has; a resumed one keeps its own), `aelab_output_subdir` (Hydra's config copy of a
resumed run beside the original) and `aelab_job_dirname` (a sweep job's readable name, aelab/sweep/naming.py).

Registered when this module is imported: the CLI's pre-check, the commands, `aelab.train` and the tests import it
(below the commands, so none of them needs the commands package for it).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from aelab.sweep.naming import job_dirname

STARTED = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")  # one stamp per process, however often resolved


_claimed: dict[str, str] = {}


def _run_dir(resume: str | None, fresh: str) -> str:
    """A resumed run keeps writing into its own directory; a new one claims a directory nobody else has.

    Two `aelab train` started in the same second would get the same timestamped
    name; the atomic mkdir gives the second one `<name>-1` instead of sharing.
    """
    if resume:
        return str(resume)
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0 and fresh not in _claimed:  # torchrun's other ranks: rank 0 alone writes the run
        _claimed[fresh] = tempfile.mkdtemp(prefix=f"aelab-rank{rank}-")
    if fresh not in _claimed:  # Hydra resolves the run dir several times: claim once per process
        candidate, k = fresh, 0
        while True:
            try:
                Path(candidate).parent.mkdir(parents=True, exist_ok=True)
                Path(candidate).mkdir()
                break
            except FileExistsError:
                k += 1
                candidate = f"{fresh}-{k}"
        _claimed[fresh] = candidate
    return _claimed[fresh]


def _output_subdir(resume: str | None) -> str:
    """Hydra's config copy of a resumed run goes beside, never over, the original."""
    return f".hydra/resume_{STARTED}" if resume else ".hydra"


def register_resolvers() -> None:
    for name, fn in (("aelab_run_dir", _run_dir), ("aelab_output_subdir", _output_subdir),
                     ("aelab_job_dirname", job_dirname)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)



@contextmanager
def claims_released() -> Iterator[None]:
    """Folders claimed inside the block are forgotten after it: the next composition in this process (the next
    `aelab.train` call) claims a new folder instead of reusing one."""
    before = set(_claimed)
    try:
        yield
    finally:
        for fresh in set(_claimed) - before:
            del _claimed[fresh]


register_resolvers()
