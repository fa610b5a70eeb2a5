"""What keeps launch-to-first-step short: no torch._dynamo or torchvision on the training path, IDX data
decoded once, and each of these shortcuts computes what the long way computes."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from aelab.data.idx import read_idx
from aelab.engine.eager_optim import eager_step, skip_dynamo_import
from aelab.viz.images import grid


@pytest.mark.parametrize("shape, nrow", [((5, 1, 7, 9), 3), ((16, 3, 4, 4), 8), ((1, 1, 5, 5), 8),
                                         ((10, 3, 6, 5), 4), ((3, 2, 2), 8)])
def test_grid_is_torchvisions_make_grid_pixel_for_pixel(shape, nrow) -> None:
    from torchvision.utils import make_grid

    x = torch.rand(shape)
    assert torch.equal(grid(x, nrow=nrow, pad=2), make_grid(x, nrow=nrow, padding=2, pad_value=1.0))


def test_eager_step_takes_the_same_steps_as_torchs_own(monkeypatch) -> None:
    torch.manual_seed(0)
    weights = torch.randn(5, 3)
    params = {name: torch.nn.Parameter(weights.clone()) for name in ("ours", "torch's")}
    opts = {name: torch.optim.Adam([p], lr=0.1, fused=True) for name, p in params.items()}
    skip_dynamo_import()
    assert eager_step(opts["ours"])
    hook_calls = []
    opts["ours"].register_step_post_hook(lambda *_: hook_calls.append(1))
    for step in range(3):
        for name, p in params.items():
            opts[name].zero_grad()
            (p.sin().sum() * (step + 1)).backward()
            opts[name].step()
    assert torch.equal(params["ours"], params["torch's"]) and hook_calls == [1, 1, 1]
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, differentiable=True)
    assert not eager_step(sgd)  # a differentiable optimizer keeps torch's step (its grad mode differs)


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_the_lean_fused_adam_step_is_torchs_step_bit_for_bit(kind, monkeypatch) -> None:
    """Two groups (one with weight decay), a parameter whose gradient is missing on some steps, the lr changed by a
    scheduler, and the state saved and loaded into a new optimizer half way: the same parameters as torch's step,
    with torch's own _fused_adam called only where state had to be made."""
    import torch.optim.adam as adam_module

    torch_calls = []
    fused = adam_module._fused_adam
    monkeypatch.setattr(adam_module, "_fused_adam", lambda *a, **k: (torch_calls.append(1), fused(*a, **k))[1])
    skip_dynamo_import()
    torch.manual_seed(0)
    start = [torch.randn(6, 4), torch.randn(4), torch.randn(3, 3)]
    params = {name: [torch.nn.Parameter(t.clone()) for t in start] for name in ("ours", "torch's")}

    def make(name: str) -> torch.optim.Optimizer:
        a, b, c = params[name]
        return kind([{"params": [a, b]}, {"params": [c], "lr": 0.03, "weight_decay": 0.1}], lr=0.01, fused=True)

    opts = {name: make(name) for name in params}
    assert eager_step(opts["ours"])
    schedulers = {name: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for name, o in opts.items()}
    for step in range(10):
        if step == 5:  # a checkpoint and resume, in the trainer's order: new optimizer and scheduler, then their state
            saved, saved_schedule = opts["ours"].state_dict(), schedulers["ours"].state_dict()
            opts["ours"] = make("ours")
            assert eager_step(opts["ours"])
            schedulers["ours"] = torch.optim.lr_scheduler.StepLR(opts["ours"], step_size=3, gamma=0.5)
            opts["ours"].load_state_dict(saved)
            schedulers["ours"].load_state_dict(saved_schedule)
        for name in params:
            a, b, c = params[name]
            opts[name].zero_grad()
            loss = (a.sin() @ b).sum() * (step + 1)
            if step % 4 != 1:  # c has no gradient on steps 1, 5, 9 (and none made before step 0's state)
                loss = loss + (c * c.cos()).sum()
            loss.backward()
            opts[name].step()
            schedulers[name].step()
        assert all(torch.equal(x, y) for x, y in zip(params["ours"], params["torch's"])), step
    # torch's Adam calls _fused_adam once per group and step: 2 x 10 on its side, 2 on ours (step 0 made the state)
    assert len(torch_calls) == 2 * 10 + 2, len(torch_calls)


def test_the_lean_step_follows_a_group_added_after_it_was_patched() -> None:
    """A group of float64 and float32 parameters added after eager_step: torch's parameters at every step (CPU's
    fused kernel takes mixed dtypes; the lean step hands such a group to torch's step, which groups them, as CUDA's
    kernel needs)."""
    skip_dynamo_import()
    pairs = {name: [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
                    torch.nn.Parameter(torch.ones(2))] for name in ("ours", "torch's")}
    opts = {name: torch.optim.Adam([ps[0]], lr=0.1, fused=True) for name, ps in pairs.items()}
    assert eager_step(opts["ours"])
    for name, (a, b, c) in pairs.items():
        opts[name].add_param_group({"params": [b, c]})  # added after the patch: float64 and float32 in one group
    for _ in range(3):
        for name, (a, b, c) in pairs.items():
            opts[name].zero_grad()
            (a.sin().sum() + b.cos().sum() + c.exp().sum()).backward()
            opts[name].step()
    assert all(torch.equal(x, y) for x, y in zip(pairs["ours"], pairs["torch's"]))


def test_a_training_run_imports_neither_dynamo_nor_torchvision_nor_matplotlib(tmp_path) -> None:
    """Each costs start-up or epoch time a run on image data does not need: torch._dynamo 1.8 s, torchvision 2 s,
    matplotlib 0.5 CPU-s at the first picture and 0.2 at each after (the latent manifold is drawn with Pillow:
    aelab/viz/scatter.py)."""
    # cli.main, not `python -m aelab`: the command's quick exit would end the process before the print
    code = ("import sys; from aelab.cli import main; main(['train', 'data=synthetic', 'epochs=2', "
            "'logger=tensorboard', 'trainer.checkpoint_every=1', 'device=cpu']); "
            "print(sorted(m for m in ('torch._dynamo', 'torchvision', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "AELAB_DATA_DIR": str(tmp_path / "cache")})
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded == "[]", loaded


def _gz_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_gzipped_idx_is_decoded_once_and_again_when_the_file_changes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "cache"))
    path = tmp_path / "x-idx3-ubyte.gz"
    first = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    _gz_idx(path, first)
    assert np.array_equal(read_idx(path), first)
    cached = list((tmp_path / "cache" / "idx").glob("*.npy"))
    assert len(cached) == 1

    def no_decoding(_):
        raise AssertionError("a cached file must not be decoded again")

    monkeypatch.setattr(gzip, "decompress", no_decoding)
    assert np.array_equal(read_idx(path), first)
    monkeypatch.undo()
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "cache"))
    second = first[::-1].copy()
    _gz_idx(path, second)
    os.utime(path, ns=(1, 10**18))  # another mtime, as a replaced file has
    assert np.array_equal(read_idx(path), second)
