"""VQ-VAE (quantisation, straight-through, EMA codebook, dead-code restarts, the code layout) and the PixelCNN
prior over its code grid (causal masks, bits per code against the baselines, samples that decode, files)."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.pixelcnn_prior import (LAST_FILE, PRIOR_FILE, PixelCNNPrior, baseline_bits, code_grids,
                                         fit_pixelcnn)
from aelab.models.vq_vae import usage_stats
from aelab.viz.logger import NullLogger
from conftest import TINY, build_tiny

CPU = torch.device("cpu")
# a 4x4 grid of 8-vectors on the 16x16 synthetic shapes: two stride-2 blocks
GRID = ["model=vq_vae", "arch=conv", "arch.channels=[16,32]", "latent_dim=128", "model.codebook_size=32"]


pytestmark = pytest.mark.usefixtures("one_thread")


_build = build_tiny


def _train(compose_cfg, tmp_path, *overrides: str, epochs: int = 8):
    """A VQ-VAE trained for 8 epochs of 12 steps on the synthetic shapes (restarts after 10 unused steps)."""
    cfg, data, net = _build(compose_cfg, *GRID, "lr=2e-3", "model.restart_after=10", *overrides)
    trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
    for _ in range(epochs):
        for batch in data.train.batches(64, shuffle=True, generator=trainer.data_rng):
            trainer.train_step(batch)
    return data, net.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    def compose_cfg(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            return compose(config_name="train", overrides=overrides)

    torch.set_num_threads(1)
    yield _train(compose_cfg, tmp_path_factory.mktemp("vq-run"))
    GlobalHydra.instance().clear()


# ---- the code layout ------------------------------------------------------------------------------
def test_the_code_is_the_flattened_grid_of_codebook_vectors(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, *GRID)
    assert net.grid == (4, 4) and net.embedding_dim == 8  # latent_dim 128 = 16 cells x 8
    x = data.train.head(5).x
    z = net.encode(x)
    index = net.code_indices(x)  # (5, 4, 4)
    assert z.shape == (5, 128) and index.shape == (5, 4, 4)
    cells = z.view(5, 4, 4, 8)  # cell by cell: each 8-vector is the codebook row of that cell's index
    assert torch.equal(cells, net.codebook.vectors[index])
    assert torch.equal(net.decode(z), net.decode_grid(net.unflatten(z)))
    assert torch.equal(net.flatten(net.unflatten(z)), z)


def test_latent_dim_and_embedding_dim_must_agree_with_the_grid(compose_cfg) -> None:
    with pytest.raises(UserError) as error:  # 16 cells do not divide 100
        _build(compose_cfg, *GRID[:3], "latent_dim=100")
    assert error.value.key == "latent_dim" and "4x4" in error.value.line() and "multiple" in error.value.line()
    with pytest.raises(UserError) as error:
        _build(compose_cfg, *GRID, "model.embedding_dim=16")  # 16 cells x 16 = 256, not 128
    assert error.value.key == "latent_dim" and "latent_dim=256" in error.value.line()
    _, _, net = _build(compose_cfg, *GRID[:3], "latent_dim=256", "model.embedding_dim=16")
    assert net.embedding_dim == 16
    _, _, net = _build(compose_cfg, "model=vq_vae", "arch=mlp", "latent_dim=12", "model.embedding_dim=3")
    assert net.grid == (1, 4) and net.encode(torch.rand(2, 1, 16, 16)).shape == (2, 12)  # a row of 4 vectors


def test_vectors_are_refused_in_one_line(compose_cfg) -> None:
    cfg = compose_cfg(["data=toy2d", "model=vq_vae", "latent_dim=2", "device=cpu"])
    data = build_data(cfg.data, CPU)
    with pytest.raises(UserError) as error:
        build_model(cfg, data.shape, data.num_classes)
    assert error.value.key == "model" and "vectors" in error.value.line()
    assert len(error.value.line().splitlines()) == 1


def test_the_preset_is_the_papers_setting_on_a_7x7_grid(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=vq_vae_mnist", "device=cpu"])
    net = build_model(cfg, (1, 28, 28), 10)  # MNIST's shape, no data needed
    assert net.grid == (7, 7) and net.embedding_dim == 64 and net.codebook_size == 512
    assert net.commitment == 0.25 and net.codebook.ema and net.codebook.decay == 0.99


def test_commitment_follows_beta_and_defaults_to_the_papers(compose_cfg) -> None:
    cfg = compose_cfg([*TINY, *GRID])
    assert cfg.beta == 0.25 and cfg.model.commitment == 0.25
    assert compose_cfg([*TINY, *GRID, "beta=1.5"]).model.commitment == 1.5


# ---- training -------------------------------------------------------------------------------------
def test_straight_through_gradients_reach_the_encoder_and_the_codebook_term_the_codebook(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, *GRID, "model.ema=false")
    batch = data.train.head(32)
    terms = net.losses(batch, 1)
    assert set(terms) == {"recon", "commitment", "codebook"}
    terms["recon"].backward()  # through the quantiser: the encoder gets the decoder's gradient
    assert net.encoder.features[0][0].weight.grad.abs().sum() > 0
    assert net.codebook.vectors.grad is None  # the straight-through path skips the codebook
    net.zero_grad()
    terms = net.losses(batch, 1)
    terms["codebook"].backward()
    used = torch.unique(net.code_indices(batch.x))
    grad = net.codebook.vectors.grad
    assert grad[used].abs().sum(1).gt(0).all()
    assert grad[[k for k in range(32) if k not in used.tolist()]].abs().sum() == 0
    assert net.encoder.features[0][0].weight.grad is None  # sg[z_e]: the codebook term leaves the encoder alone


def test_ema_with_no_memory_puts_each_code_at_the_mean_of_its_vectors(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, *GRID, "model.decay=0", "model.restart_dead=false")
    net.train()
    batch = data.train.head(64)
    rows = net.flatten(net.encoder_grid(batch.x)).view(-1, 8).detach()
    index, _ = net.codebook.nearest(rows)
    net.losses(batch, 1)  # one training step's update
    for k in torch.unique(index).tolist():
        assert torch.allclose(net.codebook.vectors[k], rows[index == k].mean(0), rtol=1e-3, atol=1e-4)
    net.eval()
    before = net.codebook.vectors.clone()
    net.losses(batch, 1)  # evaluation never moves the codebook
    assert torch.equal(before, net.codebook.vectors)


def test_restarts_revive_every_dead_code(trained, compose_cfg, tmp_path) -> None:
    found = {}
    for restart in ("true", "false"):
        data, net = trained if restart == "true" else _train(compose_cfg, tmp_path, "model.restart_dead=false")
        found[restart] = usage_stats(code_grids(net, data.train), 32)["codes_used"], int(net.codebook.restarts)
        with torch.no_grad():
            assert all(math.isfinite(v.item()) for v in net.eval().losses(data.val.head(128), 0).values())
    assert found["true"][0] == 1.0 and found["true"][1] > 0  # every code chosen by some training vector
    assert found["false"][0] < 0.9 and found["false"][1] == 0  # without restarts some never are


def test_diagnostics_report_codebook_usage(compose_cfg) -> None:
    _, data, net = _build(compose_cfg, *GRID)
    found = net.diagnostics(data.val.head(64))
    index = net.code_indices(data.val.head(64).x)
    used = torch.unique(index).numel()
    assert found.scalars["codes_used"] == pytest.approx(used / 32)
    assert 1 <= found.scalars["codebook_perplexity"] <= used + 1e-4  # e^entropy is at most the number used
    assert found.histograms["code_index"].numel() == index.numel()
    assert usage_stats(torch.arange(8), 8) == pytest.approx({"codebook_perplexity": 8.0, "codes_used": 1.0})


# ---- the PixelCNN prior ---------------------------------------------------------------------------
def test_each_cell_sees_every_cell_before_it_and_none_after() -> None:
    torch.manual_seed(0)
    prior = PixelCNNPrior((5, 5), torch.randn(6, 3), width=8, blocks=2, kernel=5)
    index = torch.randint(6, (1, 5, 5))
    base = prior(index)
    for r, c in [(0, 0), (0, 4), (2, 3), (4, 4)]:
        changed = index.clone()
        changed[0, r, c] = (changed[0, r, c] + 1) % 6
        moved = (prior(changed) - base).abs().sum(1)[0] > 1e-6  # (5, 5): cells whose logits moved
        later = torch.arange(25).view(5, 5) > r * 5 + c
        assert torch.equal(moved, later), (r, c)  # never itself or earlier cells; every later one (no blind spot)


def test_pixelcnn_beats_the_baselines_on_held_out_codes_and_its_samples_decode(trained, tmp_path) -> None:
    data, net = trained
    lines: list[str] = []
    prior = fit_pixelcnn(net, data.train, epochs=10, out_dir=tmp_path / "prior", val=data.val, width=32, blocks=2,
                         kernel=5, report=lines.append)
    assert len(lines) == 11 and (tmp_path / "prior" / PRIOR_FILE).is_file() and (tmp_path / "prior" / LAST_FILE).is_file()
    train_codes, test_codes = code_grids(net, data.train), code_grids(net, data.test)
    bits = prior.bits_per_code(test_codes)
    baselines = baseline_bits(train_codes, test_codes, 32)
    assert baselines["uniform_bits"] == 5.0 and baselines["unigram_bits"] < 5.0
    assert bits < baselines["unigram_bits"] - 0.2, (bits, baselines)
    assert prior.metrics["val_bits"] < prior.metrics["unigram_bits"] < prior.metrics["uniform_bits"]

    codes = prior.sample(6, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (6, 128)
    rows = codes.view(-1, 8)  # every cell is a codebook vector
    assert (rows[:, None, :] == net.codebook.vectors[None]).all(-1).any(1).all()
    images = net.likelihood.mean(net.decode(codes))
    assert images.shape == (6, 1, 16, 16) and 0 <= images.min() and images.max() <= 1

    loaded = PixelCNNPrior.load(tmp_path / "prior" / PRIOR_FILE)
    assert loaded.bits_per_code(test_codes) == pytest.approx(bits, rel=1e-5)
    assert loaded.metrics == prior.metrics and loaded.grid == (4, 4)


def test_a_broken_prior_file_is_one_error_line(tmp_path) -> None:
    path = tmp_path / "pixelcnn.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as error:
        PixelCNNPrior.load(path)
    assert len(error.value.line().splitlines()) == 1


def test_fit_pixelcnn_refuses_a_model_without_code_indices(compose_cfg, tmp_path) -> None:
    _, data, net = _build(compose_cfg, "model=ae")
    with pytest.raises(UserError, match="vq_vae"):
        fit_pixelcnn(net, data.train, epochs=1, out_dir=tmp_path)


def test_max_codes_bounds_the_codes_a_pixelcnn_is_fitted_on(trained, tmp_path) -> None:
    """fit-prior's max_codes: the first N training grids (and as many held-out ones), as the GMM takes it."""
    data, net = trained
    assert len(data.train) > 40 and len(data.val) > 40
    lines: list[str] = []
    fit_pixelcnn(net, data.train, epochs=1, out_dir=tmp_path, val=data.val, width=8, blocks=1, kernel=3,
                 report=lines.append, max_codes=40)
    assert lines[0].startswith("pixelcnn prior: 40 code grids")
    first = code_grids(net, data.train, limit=40)
    assert torch.equal(first, code_grids(net, data.train)[:40])
