"""Where aelab has two ways to compute the same thing, pick one per shape by timing both, as cuDNN's
benchmark mode does.

A fast path is faster only where it was measured: oneDNN's matmul ran at 390 GFLOP/s against MKL's 200
on one 2-core AMD EPYC and lost to it on another, and on an Intel Xeon torch's matmul won at every
shape of the MLP VAE. So each computation with two ways (the paths below) is timed, the first time
a shape is met, on that shape with both ways (milliseconds), and the faster kept. A tie goes to the
plain way (torch's own op). Choices are logged (they land in the run's train.log) and cached per
machine in $AELAB_DATA_DIR/fastpaths.json (default ~/.cache/aelab), keyed by the CPU or GPU model, the
torch version and the thread count, so later runs skip the timing. Only a steady timing is cached: on a busy
machine (other jobs on the same cores) a 0.3 ms loss took 80 ms in one round and 68 in the next, and the slower
way, cached, would have stayed every later run's; an unsteady timing decides for its own run only (recorded in its
checkpoints as always), and the next run on the machine times again.

trainer.fast_paths: auto (the above) | on (every fast path, untimed) | off (torch's plain ops) | retune
(time again and overwrite the cached choices); trainer.fast_path.<path>=... forces one path.

A run's choices are part of the run: its checkpoints carry them (`record()`), and a resumed run or a command
that opens it takes them back (`adopt()`) before the machine's cache or a new timing, so a run interrupted and
resumed computes exactly as the straight one did, whatever the machine's load when each part timed.

Ranks of a distributed run never time: a timing forward through a SyncBatchNorm all-reduces, and ranks
timing different numbers of rounds would pair their collectives wrongly (the losses of 2 ranks drifted
0.7% from one process's). They take the machine's cached choices, else the plain way, alike on every rank.

This module is torch-free at import: the trainer's schema reads PATHS and MODES from it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aelab.files import atomic_path, cache_not_written, data_dir

log = logging.getLogger(__name__)

PATHS = {  # name: (the fast way, the plain way)
    "linear": ("oneDNN matmul", "torch matmul"),
    "bernoulli_nll": ("log-free Bernoulli NLL", "BCE with logits"),
    "conv_layout": ("channels-last", "contiguous"),
    "cpu_bf16": ("bf16 autocast", "fp32"),  # trainer.precision=auto on a CPU with bf16 dot products (engine/precision.py)
    # where bf16 autocast won: an fp32 step whose matmuls oneDNN computes on bf16-rounded operands (nets/precision.py)
    "bf16_matmul": ("bf16 matmuls in an fp32 step", "bf16 autocast"),
}
MODES = ("auto", "on", "off", "retune")
TIE = 0.03  # the fast way must win by more than this fraction: a tie keeps torch's own op


@dataclass(frozen=True)
class Choice:
    path: str
    key: str
    fast: bool
    fast_us: float | None = None  # the timings it was made on (None: forced by a mode)
    plain_us: float | None = None
    source: str = "measured"  # measured | cached | the run's | forced | untimed in a distributed run
    steady: bool = True  # its timing repeated within STEADY: the machine was not busy (only such are cached)

    @property
    def name(self) -> str:
        return f"{self.path}|{self.key}"

    def entry(self) -> dict:
        """What a checkpoint's record and the machine's cache store of a choice."""
        return {"fast": self.fast, "fast_us": self.fast_us, "plain_us": self.plain_us, "steady": self.steady}

    @classmethod
    def from_entry(cls, path: str, key: str, entry: Mapping, source: str) -> Choice:
        return cls(path, key, bool(entry["fast"]), entry.get("fast_us"), entry.get("plain_us"), source,
                   bool(entry.get("steady", True)))

    def describe(self) -> str:
        way = PATHS[self.path][0 if self.fast else 1]
        if self.fast_us is None:
            return f"fast path {self.path} [{self.key}]: {way} ({self.source})"
        fast_name, plain_name = PATHS[self.path]
        return (f"fast path {self.path} [{self.key}]: {way} ({self.source}: {fast_name} {self.fast_us:.0f} us, "
                f"{plain_name} {self.plain_us:.0f} us)")


class FastPaths:
    """The modes in force and the choices made in this process (and loaded from the machine's cache)."""

    def __init__(self) -> None:
        self.modes: dict[str, str] = dict.fromkeys(PATHS, "auto")
        self.made: dict[tuple[str, str], Choice] = {}  # this process's choices, in the order made
        self._cached: dict[str, dict] | None = None  # this machine's entries of the cache file
        self._adopted: dict[str, dict] = {}  # the choices of the run being continued: they come first
        self.timing = True  # False in a distributed run: see the module's docstring

    def configure(self, mode: str = "auto", per_path: Mapping[str, str | None] | None = None,
                  timing: bool = True) -> None:
        """Set every path's mode (and some paths' own); forgets this process's choices (and any adopted run's) so
        they are made anew, and reads the machine's cache again ($AELAB_DATA_DIR may have changed).
        timing=False (ranks of a distributed run): an auto path takes its cached choice, else the plain way."""
        self.modes = _modes(mode, per_path)
        self.made.clear()
        self._adopted.clear()
        self._cached = None
        self.timing = timing

    def follow_run(self, mode: str, per_path: Mapping[str, str | None] | None, recorded: Mapping[str, Mapping] | None
                   ) -> None:
        """A trained run opened for a command (eval, sample, ...): its modes and its recorded choices. Choices this
        process already made under the same modes stay (a run trained and then reopened in one process computes
        a shape it never recorded as it just did, instead of timing it again under another load)."""
        if _modes(mode, per_path) != self.modes or not self.timing:
            self.configure(mode, per_path)
        self.adopt(recorded)

    def record(self) -> dict[str, dict]:
        """The choices this run computes with, for its checkpoint: adopted ones not met again yet included."""
        return {**self._adopted, **{c.name: c.entry() for c in self.made.values() if c.source != "forced"}}

    def adopt(self, recorded: Mapping[str, Mapping] | None) -> None:
        """Take a run's recorded choices (from its checkpoint): an auto or retune path uses them before the
        machine's cache or a timing; a forced mode (on/off) still wins."""
        for name, entry in (recorded or {}).items():
            path, _, key = name.partition("|")
            if path in PATHS and key and "fast" in entry:
                self._adopted[name] = dict(entry)
                self.made.pop((path, key), None)

    def known(self, path: str, key: str) -> bool | None:
        """The choice already made in this process for (path, key), if any: the per-call lookup."""
        made = self.made.get((path, key))
        return None if made is None else made.fast

    def choose(self, path: str, key: str,
               candidates: Callable[[], tuple[Callable[[], object], Callable[[], object], Callable[[], None] | None]],
               plan: TimingPlan | None = None) -> bool:
        """Whether `path` takes its fast way for `key`: the choice already made in this process, else the fast
        way while torch.compile traces (nothing can be timed then), else use_fast on candidates() -> (the fast
        way, the plain way, a device sync or None), built only when a timing is needed."""
        known = self.known(path, key)
        if known is not None:
            return known
        import torch

        if torch.compiler.is_compiling():
            return True
        return self.use_fast(path, key, *candidates(), plan=plan)

    def use_fast(self, path: str, key: str, time_fast: Callable[[], object], time_plain: Callable[[], object],
                 sync: Callable[[], None] | None = None, plan: TimingPlan | None = None) -> bool:
        """Whether `path` takes its fast way for `key`; times the two callables (each runs the way once) if no
        choice is known, as `plan` says (time_pair). Callers skip this where the fast way does not apply at all
        (another device, dtype)."""
        made = self.made.get((path, key))
        if made is not None:
            return made.fast
        mode = self.modes.get(path, "auto")
        if mode in ("on", "off"):
            choice = Choice(path, key, mode == "on", source="forced")
        elif f"{path}|{key}" in self._adopted:
            choice = Choice.from_entry(path, key, self._adopted[f"{path}|{key}"], "the run's")
        else:
            entry = None if mode == "retune" else self._machine_cache().get(f"{path}|{key}")
            if entry is not None and entry.get("steady"):  # entries from before steadiness was asked: timed again
                choice = Choice.from_entry(path, key, entry, "cached")
            elif not self.timing:
                choice = Choice(path, key, False, source="untimed in a distributed run")
            else:
                timing = time_pair(time_fast, time_plain, sync, plan=plan)
                choice = Choice(path, key, timing.fast_s < timing.plain_s * (1 - TIE), timing.fast_s * 1e6,
                                timing.plain_s * 1e6, "measured" if timing.steady else "measured, busy: not cached",
                                timing.steady)
                if timing.steady:
                    self._remember(choice)
        self.made[(path, key)] = choice
        log.info(choice.describe())
        return choice.fast

    def choices(self) -> list[Choice]:
        return list(self.made.values())

    # ---- the per-machine cache ---------------------------------------------------------------
    def _machine_cache(self) -> dict[str, dict]:
        if self._cached is None:
            self._cached = _read_cache().get(machine_fingerprint(), {})
        return self._cached

    def _remember(self, choice: Choice) -> None:
        self._machine_cache()[choice.name] = choice.entry()
        everything = _read_cache()  # another run may have added entries since: merge, then replace atomically
        everything.setdefault(machine_fingerprint(), {})[choice.name] = choice.entry()
        _write_cache(everything)


def _modes(mode: str, per_path: Mapping[str, str | None] | None) -> dict[str, str]:
    """Every path's mode: `mode`, except the paths per_path sets."""
    return {**dict.fromkeys(PATHS, mode), **{p: m for p, m in (per_path or {}).items() if m is not None}}


@dataclass(frozen=True)
class PairTiming:
    fast_s: float  # seconds per call, the best round of each
    plain_s: float
    steady: bool  # each way's two best rounds within STEADY of each other


STEADY = 1.25  # a timing whose two best rounds differ by more was disturbed (another job on the cores)


@dataclass(frozen=True)
class TimingPlan:
    """How long time_pair measures. Each measurement repeats its way until it lasts min_seconds (at most max_reps
    calls), so timer resolution does not decide small shapes; `rounds` of them, fewer where they would overrun
    budget_seconds (at least 2): start-up must stay short."""

    min_seconds: float = 1e-3
    budget_seconds: float = 0.4
    max_reps: int | None = None
    rounds: int = 7


def time_pair(fast: Callable[[], object], plain: Callable[[], object], sync: Callable[[], None] | None = None,
              plan: TimingPlan | None = None) -> PairTiming:
    """Seconds per call of each, the best of the plan's rounds of interleaved measurements (interleaving shares any
    drift of the machine's speed between the two; the minimum is the least disturbed), each as long as it says.
    Steady when each way's second-best round is within STEADY of its best: a quiet machine repeats itself, a busy
    one does not."""
    sync = sync or (lambda: None)
    plan = plan or TimingPlan()

    def once(fn: Callable[[], object], reps: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t0) / reps

    samples: dict[Callable[[], object], list[float]] = {}
    for fn in (fast, plain):
        fn()  # warm-up: allocations, kernel selection
        samples[fn] = [once(fn, 1)]
    reps = {fn: min(max(1, int(plan.min_seconds / max(t[0], 1e-7))), plan.max_reps or sys.maxsize)
            for fn, t in samples.items()}
    per_round = sum(reps[fn] * samples[fn][0] for fn in samples)
    rounds = max(2, min(plan.rounds, int(plan.budget_seconds / max(per_round, 1e-9))))
    for _ in range(rounds):
        for fn in (fast, plain):
            samples[fn].append(once(fn, reps[fn]))
    best = {fn: sorted(t)[:2] for fn, t in samples.items()}
    steady = all(second <= STEADY * first for first, second in best.values())
    return PairTiming(best[fast][0], best[plain][0], steady)


def probe(*shape: int, dtype=None, like=None):
    """Random operands for timing, drawn from a generator of their own: a run that times its fast paths
    must draw the same noise afterwards as one that read its choices from the cache."""
    import torch

    global _PROBE_RNG
    if _PROBE_RNG is None:
        _PROBE_RNG = torch.Generator().manual_seed(0)
    out = torch.randn(*shape, generator=_PROBE_RNG, dtype=dtype or torch.float32)
    return out if like is None else out.to(device=like.device, dtype=like.dtype)


_PROBE_RNG = None


def rows_bucket(n: int) -> int:
    """The power of two at or above n: batches of 100 and 128 share a choice, so a last short batch or an
    eval batch of another size costs no new timing unless its size class changes."""
    return 1 << max(0, (int(n) - 1).bit_length())


def machine_fingerprint() -> str:
    """What a choice depends on: the processor (or GPU), torch's version and its thread count."""
    import torch

    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        cpu = platform.processor() or cpu
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no gpu"
    return f"{cpu} | {gpu} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cache_file() -> Path:
    return data_dir() / "fastpaths.json"


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, or unreadable: choices are measured again
        return {}


def _write_cache(data: dict) -> None:
    path = cache_file()
    try:
        with atomic_path(path, what="fast-path cache") as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only home or a full disk only costs the timing again next run
        cache_not_written("fast-path cache", path, exc)


FAST_PATHS = FastPaths()  # the process's one instance: the trainer configures it, the layers consult it
