"""CPU threads per job: N jobs in parallel on C cores get C // N torch threads each, not C each."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aelab.sweep.naming import SWEEP_FILE


def available_cores() -> int:
    """Cores this process may use: SLURM's allocation, else the CPU affinity mask, else all."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def parallel_jobs() -> int | None:
    """How many jobs of this sweep run at once on this machine (joblib launcher), else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    launcher = hc.get("launcher") or {}
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    n_jobs = int(launcher.get("n_jobs") or 1)
    cores = os.cpu_count() or 1
    parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores, -2 = all but one
    try:  # a 2-job sweep with n_jobs=-1 runs 2 at once, not one per core
        total = json.loads((Path(hc.sweep.dir) / SWEEP_FILE).read_text()).get("jobs")
        if isinstance(total, int) and total > 0:
            parallel = min(parallel, total)
    except (OSError, ValueError):
        pass
    return parallel


def threads_for_job(setting: int | str | None) -> int | None:
    """`auto`: cores // parallel jobs under the joblib launcher, SLURM's cpus per task on a cluster, else
    torch's default (None); an integer: exactly that many."""
    if setting is None or setting == "auto":
        if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            return available_cores()
        parallel = parallel_jobs()
        return None if parallel is None else max(1, available_cores() // parallel)
    return int(setting)


def apply_threads(setting: int | str | None) -> int:
    """Set torch's intra-op threads from the `threads` key; returns the count in use."""
    import torch

    threads = threads_for_job(setting)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
