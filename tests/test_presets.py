"""Every experiment preset (conf/experiment/*.yaml, globbed: a new one is covered automatically) composes and
trains for a few steps. Big datasets are swapped for the synthetic one (dSprites for 256 of its combinations);
the rest of the preset is kept."""

from __future__ import annotations

import math

import pytest

from aelab.commands import train
from conftest import REPO

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
SMALL_DATA = ("load_toy2d", "load_synthetic", "load_digits")  # offline and quick: kept as the preset has it
QUICK = ["epochs=1", "trainer.limit_batches=2", "batch_size=32", "logger=none", "device=cpu"]


def test_the_course_experiments_are_all_there() -> None:
    expected = {"pca_denoising", "ae_2d", "dae_24d", "sparse_ae_l1", "sparse_ae_kl", "ae_interpolation",
                "vae_kl_only", "vae_2d", "vae_24d", "ae_toy2d", "cae_toy2d", "cvae_2d", "aae_uniform", "aae_grid"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_for_a_few_steps(compose_cfg, preset: str, tmp_path) -> None:
    cfg = compose_cfg([f"experiment={preset}"])
    source = cfg.data.source._target_
    # dSprites is drawn, never downloaded: a few combinations keep the preset's own data (and its data keys)
    drawn = ["data.size=32", "data.subsample=256"] if source.endswith("load_dsprites") else ["data=synthetic"]
    data = [] if source.endswith(SMALL_DATA) else drawn
    overrides = [f"experiment={preset}", *data, *QUICK]
    cfg = compose_cfg(overrides)
    metrics = train.run(cfg, tmp_path, overrides)
    assert metrics["epochs"] == 1 and math.isfinite(metrics["val/loss"])
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
