"""What a run may ask of the engine: the trainer's keys (trainer.* in conf/trainer/default.yaml), the devices and
precisions, declared once and torch-free, so the pre-check reads the same declaration the engine follows.

`TrainerOptions` is the schema of the `trainer` node (aelab/schema.py reads its signature); the tuples are the one
list of each kind of value: engine/device.py and engine/distributed.py take theirs from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
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
    """trainer.*: the loop's settings (the family and the data have their own schemas). The trainer reads its
    settings from an instance of this, and only from it. Every default has one home, conf/trainer/default.yaml
    (what `--cfg job` shows): here are the types, ranges and rules, and `from_config` fills a key an older run's
    stored config lacks from that file."""

    epochs: Annotated[int, Range(0, None)]
    batch_size: Annotated[int, Range(1, None)]
    optimizer: dict[str, Any]  # a _target_ node (torch.optim.*), checked against its own signature
    scheduler: dict[str, Any] | None  # a _target_ node stepped once per epoch
    grad_clip: Annotated[float | None, Range(0, None, low_open=True)]
    log_every: Annotated[int, Range(1, None)]
    eval_batch_size: Annotated[int, Range(1, None)]
    limit_batches: Annotated[int | None, Range(1, None)]
    checkpoint_every: Annotated[int | None, Range(1, None)]
    skip_nonfinite: Annotated[int | None, Range(0, None)]
    precision: Annotated[str, OneOf(PRECISIONS)]
    compile: bool
    strategy: Annotated[str, OneOf(STRATEGIES)]
    monitor: str | None
    monitor_mode: Annotated[str, OneOf(MODES)]
    early_stopping: Annotated[int | None, Range(1, None)]
    fast_paths: Annotated[str, OneOf(fastpath.MODES)]
    fast_path: dict[str, Any] | None  # one path forced: {linear: on, conv_layout: off, ...}
    flush_denormals: bool  # CPU: denormal floats computed as zero (aelab/engine/host.py)
    malloc_keep_mb: Annotated[int, Range(0, None)]  # glibc: freed memory kept between steps (aelab/engine/host.py)

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> TrainerOptions:
        """The options of a (composed or stored) trainer node, interpolations resolved."""
        from omegaconf import DictConfig, OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        values = {**defaults_for(values), **values}
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def forced_fast_paths(self) -> dict[str, str | None] | None:
        return dict(self.fast_path) if self.fast_path else None

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


def defaults_for(node: Mapping[str, Any]) -> dict[str, Any]:
    """conf/trainer/default.yaml's values of the keys `node` lacks (a run stored before a key existed): the one
    home of the trainer's defaults. The keys that default.yaml interpolates (epochs, ...) every stored run has."""
    missing = [f.name for f in fields(TrainerOptions) if f.name not in node]
    if not missing:
        return {}
    from importlib.resources import files

    from omegaconf import OmegaConf

    stored = OmegaConf.create((files("aelab.conf") / "trainer" / "default.yaml").read_text())
    return {name: OmegaConf.to_container(stored, resolve=False)[name] for name in missing}
