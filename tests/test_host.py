"""The process settings `aelab train` makes before it builds anything (aelab/engine/host.py).

The two settings are tested each in a fresh interpreter: both are process-wide, and the denormal flush reaches only
threads started after it, as in `aelab train`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aelab.engine.host import GLIBC

DENORMALS = """
import json, sys, torch
from aelab.engine.host import flush_denormals
torch.set_num_threads(2)
took = flush_denormals(sys.argv[1] == "on")
x = torch.full((1 << 20,), 1e-39)  # a denormal float32; 2^20 elements: split over both threads
print(json.dumps({"took": took, "nonzero": int((x * 1.5).count_nonzero())}))
"""

FAULTS = """
import json, resource, sys, torch
from aelab.engine.host import keep_freed_memory
took = keep_freed_memory(int(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
PATTERNS = [  # floats allocated, written and freed each step: the MLP VAE's weights, gradients and activations
    [401408, 401408, 200704, 100352, 401408, 401408, 65536, 401408],
    [400000, 400000, 200000, 100000, 400000, 400000, 32768, 400000],
    [300000] * 10,
]
worst = 0.0
for sizes in PATTERNS:
    def step():
        blocks = [torch.ones(n) for n in sizes]
        del blocks
    for _ in range(3):
        step()
    before = faults()
    for _ in range(20):
        step()
    worst = max(worst, (faults() - before) / 20)
print(json.dumps({"took": took, "faults_per_step": worst}))
"""


def run_script(script: str, arg: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_flushed_denormals_compute_as_zero_on_every_thread_and_unflushed_ones_do_not() -> None:
    on, off = run_script(DENORMALS, "on"), run_script(DENORMALS, "off")
    if not on["took"]:
        pytest.skip("this CPU has no flush-to-zero mode")
    assert on["nonzero"] == 0
    assert off["nonzero"] == 1 << 20 and not off["took"]


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_kept_freed_memory_is_not_faulted_back_in_each_step() -> None:
    kept = run_script(FAULTS, "1024")
    assert kept["took"]
    # ~6 MB a step: 1,500 pages each time glibc gives it back, which its own thresholds do in most processes
    # (on this pattern 0, 1,530 or 2,900 faults a step, varying from process to process, so not asserted)
    assert kept["faults_per_step"] < 20
    assert not run_script(FAULTS, "0")["took"]  # 0: glibc's defaults, untouched


def test_both_are_on_by_default(compose_cfg) -> None:
    from aelab.engine.options import TrainerOptions

    options = TrainerOptions.from_config(compose_cfg(["model=vae"]).trainer)
    assert options.flush_denormals is True and options.malloc_keep_mb == 1024
