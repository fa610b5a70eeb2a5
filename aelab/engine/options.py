"""What a run may ask of the engine: the trainer's keys (trainer.* in conf/trainer/default.yaml), the devices and
precisions, declared once and torch-free, so the pre-check reads the same declaration the engine follows.

`TrainerOptions` is the schema of the `trainer` node (aelab/schema.py reads its signature); the tuples are the one
list of each kind of value: engine/device.py and engine/distributed.py take theirs from here.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from aelab.errors import UserError
from aelab.metrics.directions import MODES
from aelab.nets import fastpath
from aelab.schema import OneOf, Range

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("auto", "single", "ddp")
CHECKPOINTS = ("last", "best")  # checkpoints/<name>.pt a run keeps, and what `ckpt=` picks


@dataclass(frozen=True)
class TrainerOptions:
    """trainer.*: the loop's settings (the family and the data have their own schemas)."""

    epochs: Annotated[int, Range(0, None)]
    batch_size: Annotated[int, Range(1, None)]
    optimizer: dict[str, Any]  # a _target_ node (torch.optim.*), checked against its own signature
    scheduler: dict[str, Any] | None = None  # a _target_ node stepped once per epoch
    grad_clip: Annotated[float | None, Range(0, None, low_open=True)] = None
    log_every: Annotated[int, Range(1, None)] = 50
    eval_batch_size: Annotated[int, Range(1, None)] = 1024
    limit_batches: Annotated[int | None, Range(1, None)] = None
    checkpoint_every: Annotated[int | None, Range(1, None)] = None
    skip_nonfinite: Annotated[int | None, Range(0, None)] = None
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"
    compile: bool = False
    strategy: Annotated[str, OneOf(STRATEGIES)] = "auto"
    monitor: str | None = None
    monitor_mode: Annotated[str, OneOf(MODES)] = "auto"
    early_stopping: Annotated[int | None, Range(1, None)] = None
    fast_paths: Annotated[str, OneOf(fastpath.MODES)] = "auto"
    fast_path: dict[str, Any] | None = None  # one path forced: {linear: on, conv_layout: off, ...}

    @classmethod
    def check_options(cls, options: dict[str, Any], key: str) -> None:
        for name in ("optimizer", "scheduler"):
            node = options.get(name)
            if node is not None and "_target_" not in node:
                raise UserError(f"{key}.{name}", "has no _target_", f"e.g. {key}.{name}._target_=torch.optim.Adam")
        lr = (options.get("optimizer") or {}).get("lr")
        # every torch optimiser refuses lr <= 0, but only once it is built: say so before the run starts
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr <= 0:
            raise UserError(f"{key}.optimizer.lr", f"out of range: {lr!r}", "a number > 0")
        for path, mode in (options.get("fast_path") or {}).items():
            if path not in fastpath.PATHS:
                raise UserError(f"{key}.fast_path.{path}", "unknown fast path", "one of: " + ", ".join(fastpath.PATHS))
            if mode is not None and mode not in fastpath.MODES:
                raise UserError(f"{key}.fast_path.{path}", f"got {mode!r}", "one of: " + ", ".join(fastpath.MODES))
        monitor = options.get("monitor")
        if monitor is not None and not str(monitor).startswith(("val/", "train/")):
            raise UserError(f"{key}.monitor", f"unknown metric {monitor!r}", "a validation metric such as val/recon")
