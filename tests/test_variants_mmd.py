"""wae, info_vae and rae: the shared MMD against a direct double loop, and what each paper is known for."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.engine.trainer import Trainer
from aelab.errors import UserError
from aelab.models.mmd import KERNELS, SCALES, mmd, mmd_to_standard_normal
from aelab.models.rae import RAE
from aelab.models.vae import VAE
from aelab.schema import check_target
from aelab.viz.logger import NullLogger
from conftest import TINY

CPU = torch.device("cpu")


def _loop_mmd(q: torch.Tensor, p: torch.Tensor, kernel: str, scales, prior_var: float = 1.0) -> float:
    """The U-statistic written out pair by pair, as in Gretton et al. (2012), eq. 3."""
    c = 2.0 * q.shape[1] * prior_var

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        d2 = float(((a - b) ** 2).sum())
        return sum((s * c) / (s * c + d2) if kernel == "imq" else math.exp(-d2 / (s * c)) for s in scales)

    n, m = len(q), len(p)
    qq = sum(k(q[i], q[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(p[i], p[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    qp = sum(k(q[i], p[j]) for i in range(n) for j in range(m)) / (n * m)
    return qq + pp - 2 * qp


@pytest.mark.parametrize("kernel", KERNELS)
def test_mmd_equals_the_double_loop(kernel: str) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, generator=g, dtype=torch.float64) * 1.5 + 0.3
    p = torch.randn(9, 3, generator=g, dtype=torch.float64)
    for scales in (SCALES, (0.7,)):
        assert float(mmd(q, p, kernel, scales)) == pytest.approx(_loop_mmd(q, p, kernel, scales), rel=1e-10, abs=1e-12)
    assert float(mmd(q, p, kernel, (1.0,), prior_var=2.0)) == pytest.approx(_loop_mmd(q, p, kernel, (1.0,), 2.0), rel=1e-10)


@pytest.mark.parametrize("kernel", KERNELS)
def test_mmd_is_unbiased_near_zero_for_equal_distributions_and_grows_with_a_shift(kernel: str) -> None:
    torch.manual_seed(0)
    same = torch.stack([mmd_to_standard_normal(torch.randn(64, 4), kernel) for _ in range(200)])
    shifted = torch.stack([mmd_to_standard_normal(torch.randn(64, 4) + 1.0, kernel) for _ in range(20)])
    assert abs(float(same.mean())) < 3 * float(same.std()) / math.sqrt(len(same))  # unbiased: centred on 0
    assert float(shifted.mean()) > 10 * float(same.std())
    z = torch.randn(32, 4, requires_grad=True)
    mmd_to_standard_normal(z, kernel).backward()
    assert torch.isfinite(z.grad).all()  # equal points on the diagonal must not give NaN gradients


def _model(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, "arch=mlp", *overrides])
    torch.manual_seed(0)
    data = build_data(cfg.data, CPU)
    return cfg, data, build_model(cfg, data.shape, data.num_classes)


def _train(cfg, data, net, steps: int, tmp_path) -> None:
    trainer = Trainer(net, data, cfg.trainer, device=CPU, logger=NullLogger(), run_dir=tmp_path, seed=0)
    batches = data.train.batches(int(cfg.batch_size), shuffle=True)
    net.train()
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = data.train.batches(int(cfg.batch_size), shuffle=True)
            batch = next(batches)
        trainer.train_step(batch)
    net.eval()


def test_wae_codes_match_the_prior_where_a_plain_ae_codes_do_not(compose_cfg, tmp_path) -> None:
    # WAE's claim: the aggregate code distribution is pulled onto N(0, I), so prior draws decode like data
    measured = {}
    for family in ("ae", "wae"):
        cfg, data, net = _model(compose_cfg, f"model={family}", "lr=3e-3")
        _train(cfg, data, net, 150, tmp_path / family)
        with torch.no_grad():
            z = net.encode(data.val.head(256).x)
            torch.manual_seed(1)
            measured[family] = float(mmd_to_standard_normal(z))
    assert measured["wae"] < 0.1 * measured["ae"], measured  # measured: 0.06 against 2.4


def test_the_mmd_term_is_the_batchs_own_in_training_and_in_blocks_in_evaluation(compose_cfg) -> None:
    """Training keeps the batch's own estimate (its gradient as written); evaluation, whose batches of 1,024 codes
    cost twice the kernels of blocks of 500 and 524, averages blocks: an unbiased estimate of the same MMD."""
    from aelab.data.base import Batch
    from aelab.models.mmd import DIAGNOSTIC_BLOCK

    _, data, wae = _model(compose_cfg, "model=wae")
    x = data.train.head(64).x.repeat(20, 1, 1, 1)  # 1,280 examples: blocks of 500 and 780
    batch = Batch(x, None, torch.arange(len(x)))
    for training, block in ((True, None), (False, DIAGNOSTIC_BLOCK)):
        wae.train(training)
        with torch.no_grad():
            z = wae.training_codes(x).float()
            torch.manual_seed(0)
            term = wae.losses(batch, 1)["mmd"]
            torch.manual_seed(0)
            wae.training_codes(x)  # the same draws (none for the deterministic encoder) before the prior's
            expected = wae.lambda_mmd * mmd_to_standard_normal(z, wae.kernel, wae.scales, block=block)
        assert torch.allclose(term, expected, rtol=1e-5), (training, float(term), float(expected))


def test_wae_gaussian_encoder_trains_on_sampled_codes_and_encodes_the_mean(compose_cfg) -> None:
    _, data, gauss = _model(compose_cfg, "model=wae", "model.encoder=gaussian")
    assert not gauss.has_posterior  # no likelihood bound: eval reports no ELBO / IS-NLL for a WAE
    x = data.train.head(8).x
    mu, logvar = gauss.posterior(x)
    assert torch.equal(gauss.encode(x), mu) and logvar.shape == mu.shape
    gauss.train()
    torch.manual_seed(0)
    a = gauss.training_codes(x)
    torch.manual_seed(1)
    assert not torch.equal(a, gauss.training_codes(x))  # sampled, not the mean


def test_info_vae_with_zero_mmd_weight_is_the_vae_on_the_same_weights_and_noise(compose_cfg) -> None:
    _, data, info = _model(compose_cfg, "model=info_vae", "model.alpha=0", "model.lambda_mmd=1")
    _, _, vae = _model(compose_cfg, "model=vae", "beta=1")
    vae.load_state_dict(info.state_dict())
    batch = data.train.head(32)
    with torch.no_grad():
        torch.manual_seed(3)
        ours = info.losses(batch, 1)
        torch.manual_seed(3)
        theirs = vae.losses(batch, 1)
    assert info.mmd_weight == 0 and float(ours["mmd"]) == 0
    assert float(ours["recon"]) == pytest.approx(float(theirs["recon"]), rel=1e-6)
    assert float(ours["kl"]) == pytest.approx(float(theirs["kl"]), rel=1e-6)


def test_info_vae_weights_follow_alpha_and_lambda(compose_cfg) -> None:
    _, data, net = _model(compose_cfg, "model=info_vae", "model.alpha=1", "model.lambda_mmd=50")
    assert isinstance(net, VAE) and net.kl_weight(0) == 0 and net.mmd_weight == 50
    batch = data.train.head(32)
    torch.manual_seed(0)
    with torch.no_grad():
        terms = net.losses(batch, 1)
    assert float(terms["kl"]) == 0 and float(terms["mmd"]) != 0
    node = {"_target_": "aelab.models.info_vae.InfoVAE", "latent_dim": 4, "alpha": -5.0, "lambda_mmd": 2.0, "scales": [1.0]}
    with pytest.raises(UserError, match="lambda_mmd"):
        check_target(node, "model", provided=("arch", "input_shape", "num_classes"))


def test_info_vae_mmd_pulls_the_aggregate_posterior_onto_the_prior(compose_cfg, tmp_path) -> None:
    # alpha = 1 drops the per-example KL: only the MMD keeps q(z) near N(0, I) (Zhao et al.'s MMD-VAE)
    measured = {}
    for lam in ("1e-6", "100"):
        cfg, data, net = _model(compose_cfg, "model=info_vae", "model.alpha=1", f"model.lambda_mmd={lam}", "lr=3e-3")
        _train(cfg, data, net, 150, tmp_path / lam)
        with torch.no_grad():
            mu, logvar = net.posterior(data.val.head(256).x)
            torch.manual_seed(1)
            measured[lam] = float(mmd_to_standard_normal(mu + torch.randn_like(mu) * (0.5 * logvar).exp()))
    assert measured["100"] < 0.25 * measured["1e-6"], measured


def test_rae_gradient_penalty_estimates_the_decoder_jacobian_norm(compose_cfg) -> None:
    _, data, net = _model(compose_cfg, "model=rae", "model.regulariser=gradient_penalty")
    assert isinstance(net, RAE)
    net.eval()
    z = net.encode(data.train.head(2).x).detach()  # (2, D)

    def mean_image(code: torch.Tensor) -> torch.Tensor:  # (D,) -> (P,)
        return net.likelihood.mean(net.decode(code[None])).flatten()

    exact = sum(float(torch.autograd.functional.jacobian(mean_image, code).pow(2).sum()) for code in z) / len(z)
    torch.manual_seed(0)
    many = z.repeat_interleave(2000, dim=0)  # E over random directions: average 2,000 draws per code
    with torch.no_grad():
        estimate = float(net.decoder_jacobian_norm(many))
    assert estimate == pytest.approx(exact, rel=0.05)
    terms = net.losses(data.train.head(16), 1)
    assert set(terms) == {"recon", "code_l2", "gradient_penalty"}


def test_rae_l2_decays_only_the_decoder_and_shrinks_the_codes(compose_cfg, tmp_path) -> None:
    _, data, net = _model(compose_cfg, "model=rae", "model.reg_weight=0.5", "model.code_weight=2")
    batch = data.train.head(16)
    with torch.no_grad():
        terms = net.losses(batch, 1)
        decoder_sq = sum(float(p.pow(2).sum()) for p in net.decoder.parameters() if p.ndim > 1)
        z = net.encode(batch.x)
    assert float(terms["decoder_l2"]) == pytest.approx(0.5 * decoder_sq, rel=1e-5)
    assert float(terms["code_l2"]) == pytest.approx(float(z.pow(2).sum(1).mean()), rel=1e-5)  # 2 * 0.5 * |z|^2
    # the code penalty is what keeps an RAE's codes at a scale a fitted density can cover
    scales = {}
    for weight in ("0", "1"):
        cfg, data, model = _model(compose_cfg, "model=rae", f"model.code_weight={weight}", "lr=3e-3")
        _train(cfg, data, model, 100, tmp_path / weight)
        with torch.no_grad():
            scales[weight] = float(model.encode(data.val.head(256).x).pow(2).sum(1).mean())
    assert scales["1"] < 0.5 * scales["0"], scales
