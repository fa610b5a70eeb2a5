"""The CUDA path, on a GPU: every family trains under bf16 autocast (precision=auto on a GPU that has bf16) and
under fp16 with the gradient scaler, its loss falls and stays finite, and a GPU-trained run reopens on the CPU with
the validation loss the GPU measured. Skipped where there is no CUDA (CI); on a lent GPU run
`pytest tests/test_cuda.py`, and the rest of the suite there with AELAB_TEST_DEVICE=cuda."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aelab.commands import eval as eval_command
from aelab.commands import train
from conftest import model_names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAMILIES = model_names()
GPU_TINY = ["data=digits", "arch=conv", "latent_dim=4", "epochs=3", "batch_size=64", "device=cuda", "logger=none",
            "trainer.limit_batches=8"]
QUICK_EVAL = ["iw_samples=0", "generation.samples=0", "probe.max_train=0", "noise=[]", "tensorboard=false",
              "num_images=0", "split=val"]


def _train(compose_cfg, run: Path, *overrides: str) -> dict:
    extra = list(overrides)
    train.run(compose_cfg([*GPU_TINY, *extra]), run, extra)
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_every_family_trains_on_the_gpu(compose_cfg, tmp_path, family: str, precision: str) -> None:
    torch.cuda.reset_peak_memory_stats()
    metrics = _train(compose_cfg, tmp_path, f"model={family}", f"trainer.precision={precision}")
    assert torch.isfinite(torch.tensor(metrics["val/loss"])), metrics
    assert torch.cuda.max_memory_allocated() > 0  # it ran there


@pytest.mark.parametrize("family", ["vae", "iwae", "vamp", "wae", "beta_tcvae", "vq_vae"])
def test_a_gpu_run_reopens_on_the_cpu_with_the_loss_it_measured(compose_cfg, tmp_path, family: str) -> None:
    metrics = _train(compose_cfg, tmp_path, f"model={family}", "trainer.precision=fp32", "seed=0")
    out = eval_command.run(compose_cfg([f"run={tmp_path}", "device=cpu", *QUICK_EVAL], "eval"))
    # the sampled terms (reparameterisation draws) differ between devices; the loss of the same weights may by a little
    assert out["val/loss"] == pytest.approx(metrics["val/loss"], rel=0.05), (out["val/loss"], metrics["val/loss"])
    on_gpu = eval_command.run(compose_cfg([f"run={tmp_path}", "device=cuda", *QUICK_EVAL], "eval"))
    assert on_gpu["val/loss"] == pytest.approx(metrics["val/loss"], rel=0.05)


def test_bf16_and_fp32_reach_the_same_loss_on_the_gpu(compose_cfg, tmp_path) -> None:
    losses = {p: _train(compose_cfg, tmp_path / p, "model=vae", f"trainer.precision={p}", "seed=0",
                        "trainer.limit_batches=null", "epochs=5")["val/loss"] for p in ("fp32", "bf16")}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.03), losses
