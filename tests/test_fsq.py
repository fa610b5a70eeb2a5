"""FSQ (finite scalar quantization): the bound reaches exactly L levels per channel, indices <-> codes round-trip
exactly, straight-through gradients, the grid layout shared with vq_vae and its refusals, every code used after a
short training (no codebook to collapse), and the PixelCNN prior fitted over FSQ's index grids."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.fsq import Lattice
from aelab.models.pixelcnn_prior import fit_pixelcnn
from aelab.viz.logger import NullLogger
from conftest import build_tiny

CPU = torch.device("cpu")
# a 4x4 grid on the 16x16 synthetic shapes (two stride-2 blocks), each cell one lattice vector of 3 x 3 levels
GRID = ["model=fsq", "arch=conv", "arch.channels=[16,32]", "latent_dim=32", "model.levels=[3,3]"]


pytestmark = pytest.mark.usefixtures("one_thread")


_build = build_tiny


def test_each_channel_reaches_exactly_its_levels_and_codes_lie_in_the_unit_box() -> None:
    levels = [8, 5, 2, 3, 4]
    lattice = Lattice(levels)
    z = torch.linspace(-20, 20, 4001).unsqueeze(1).expand(-1, len(levels))  # far past both ends of the tanh
    codes = lattice.quantise(z)  # (N, 5)
    for i, k in enumerate(levels):
        values = codes[:, i].unique()
        assert len(values) == k, (k, values)
        steps = (values * (k // 2)).round()  # integers -k/2 .. k/2 - 1 (even k), -(k-1)/2 .. (k-1)/2 (odd k)
        assert torch.equal(steps, torch.arange(k, dtype=torch.float32) - k // 2)
    assert codes.abs().max() <= 1.0
    centre = lattice.quantise(torch.zeros(1, len(levels)))  # z = 0 bounds to 0 for even levels too (the shift)
    assert torch.equal(centre, torch.zeros(1, len(levels)))


def test_indices_and_codes_round_trip_exactly() -> None:
    lattice = Lattice([8, 5, 5, 5])
    every = torch.arange(1000)
    codes = lattice.codes(every)  # (1000, 4)
    assert torch.equal(lattice.indices(codes), every)
    assert len(torch.unique(codes, dim=0)) == 1000  # 8 * 5 * 5 * 5 distinct codes
    torch.manual_seed(0)
    rounded = lattice.quantise(torch.randn(5000, 4) * 3)
    assert torch.equal(lattice.codes(lattice.indices(rounded)), rounded)  # codes -> index -> code, bit for bit


def test_rounding_passes_the_bounds_gradient_straight_through() -> None:
    lattice = Lattice([8, 5])
    z = torch.randn(100, 2, requires_grad=True)
    lattice.quantise(z).sum().backward()
    half_l = (lattice.levels - 1) * (1 + 1e-3) / 2
    shift = torch.atanh(torch.tensor([0.5, 0.0]) / half_l)  # the even level's offset 0.5, none for the odd one
    expected = half_l * (1 - torch.tanh(z.detach() + shift).pow(2)) / lattice.half_width  # d bound / dz, rescaled
    assert torch.allclose(z.grad, expected, atol=1e-6) and (z.grad > 0).all()


def test_the_code_is_the_grid_vq_vae_lays_out_and_maps_to_integer_indices(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, *GRID)
    assert net.grid == (4, 4) and net.embedding_dim == 2 and net.codebook_size == 9
    assert not list(net.codebook.parameters())  # embedding_dim = len(levels): the lattice alone, nothing learnt
    x = data.train.head(5).x
    z, index = net.encode(x), net.code_indices(x)  # (5, 32), (5, 4, 4) int64
    assert z.shape == (5, 32) and index.dtype == torch.int64 and index.max() < 9
    assert torch.equal(net.codes_from_indices(index), z)
    assert torch.equal(z.view(5, 4, 4, 2), net.codebook.vectors[index])
    terms = net.losses(data.train.head(16), 1)
    assert set(terms) == {"recon"}  # no commitment, no codebook term
    _, _, projected = _build(compose_cfg, *GRID[:3], "latent_dim=128", "model.levels=[3,3]")  # 8 numbers a cell
    assert projected.embedding_dim == 8 and projected.codebook.vectors.shape == (9, 8)
    assert torch.equal(projected.codes_from_indices(projected.code_indices(x)), projected.encode(x))


def test_layout_mistakes_are_one_line(compose_cfg) -> None:
    with pytest.raises(UserError) as error:  # 16 cells do not divide 100
        _build(compose_cfg, *GRID[:3], "latent_dim=100")
    assert error.value.key == "latent_dim" and "4x4" in error.value.line()
    with pytest.raises(UserError) as error:
        _build(compose_cfg, *GRID[:4], "model.levels=[8,1]")
    assert error.value.key == "model.levels" and len(error.value.line().splitlines()) == 1


def test_short_training_uses_nearly_every_code_and_a_pixelcnn_prior_fits_the_indices(compose_cfg, tmp_path) -> None:
    """No codebook to collapse: 8 epochs of the synthetic shapes leave (almost) all 9 codes in use; the PixelCNN
    prior (vq_vae's second stage) fits the FSQ run's 4x4 index grids and its samples decode."""
    cfg, data, net = _build(compose_cfg, *GRID, "lr=2e-3")
    trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
    first = None
    for _ in range(8):
        for batch in data.train.batches(64, shuffle=True, generator=trainer.data_rng):
            terms = trainer.train_step(batch)
            first = first if first is not None else float(terms["recon"])
    net.eval()
    scalars = net.diagnostics(data.val.head(256)).scalars
    assert scalars["codes_used"] >= 8 / 9, scalars  # measured: 1.0 (9 of 9)
    assert scalars["codebook_perplexity"] > 4.0, scalars  # measured: 4.74 of 9
    with torch.no_grad():
        assert float(net.losses(data.val.head(256), 0)["recon"]) < 0.8 * first
    prior = fit_pixelcnn(net, data.train, epochs=2, out_dir=tmp_path / "prior", val=data.val, width=16, blocks=1)
    assert prior.codebook_size == 9 and prior.grid == (4, 4)
    assert prior.metrics["val_bits"] < math.log2(9)  # better than the uniform prior FSQ trains with
    codes = prior.sample(4, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (4, 32) and net.decode(codes).shape == (4, *data.shape)
