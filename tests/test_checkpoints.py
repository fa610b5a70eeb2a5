"""Checkpoints rebuild the trained model exactly, are written atomically, and bad files give one clear line."""

from __future__ import annotations

import pytest
import torch

from aelab.engine.build import build_model, build_trainer
from aelab.engine.checkpoint import load_checkpoint, save_checkpoint
from aelab.engine.loading import load_trained
from aelab.errors import UserError
from conftest import TINY

CPU = torch.device("cpu")


@pytest.mark.parametrize("overrides", [
    ["model=vae", "arch=conv", "arch.channels=[8,16]"],  # BatchNorm running statistics; the posterior mean
    ["model=cvae"],  # encoder and decoder conditioned on the label
    ["model=pca"],  # fitted in closed form: buffers, no gradient steps
], ids=["vae-conv", "cvae", "pca"])
def test_loaded_run_reproduces_the_trained_model(compose_cfg, tmp_path, overrides: list[str]) -> None:
    """What eval, sample and interpolate load computes exactly what training left, bit for bit on CPU,
    from the config the checkpoint carries (latent_dim=3 is not the config's default)."""
    cfg = compose_cfg([*TINY, *overrides, "latent_dim=3", "trainer.limit_batches=4"])
    trainer, data = build_trainer(cfg, CPU, tmp_path)
    trainer.fit()
    trained = trainer.model.eval()
    batch = data.test.head(64)  # real test images (64, 1, 16, 16) with their labels
    with torch.no_grad():
        codes = trained.encode(batch.x, batch.y)  # (64, 3)
        recon = trained.reconstruct(batch.x, batch.y)  # (64, 1, 16, 16)
        untrained = build_model(cfg, data.shape, data.num_classes).eval().encode(batch.x, batch.y)

    loaded = load_trained(tmp_path)
    assert type(loaded.model) is type(trained) and not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(batch.x, batch.y), codes)
        assert torch.equal(loaded.model.reconstruct(batch.x, batch.y), recon)
    assert codes.shape == (64, 3) and not torch.equal(untrained, codes)  # training (or fitting) changed the model


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"value": torch.tensor([1.0])}, path)
    save_checkpoint({"value": torch.tensor([2.0])}, path)
    assert load_checkpoint(path)["value"].item() == 2.0
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_truncated_and_foreign_files_are_clear_errors(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"value": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="not an aelab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")
