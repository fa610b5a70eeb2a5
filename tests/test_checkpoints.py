"""Checkpoints are atomic, carry their config, and bad files give one clear line."""

from __future__ import annotations

import pytest
import torch

from aelab.commands import train
from aelab.engine.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from aelab.engine.loading import load_run
from aelab.errors import UserError
from conftest import TINY


def test_round_trip_rebuilds_the_same_model(compose_cfg, tmp_path) -> None:
    overrides = ["model=vae", "arch=conv", "latent_dim=3"]
    train.run(compose_cfg([*TINY, *overrides]), tmp_path, overrides)
    loaded = load_run(tmp_path)
    assert type(loaded.model).__name__ == "VAE" and loaded.model.latent_dim == 3
    state = load_checkpoint(checkpoint_path(tmp_path))
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    x = torch.rand(2, *loaded.data["shape"])
    assert loaded.model.encode(x).shape == (2, 3)


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
