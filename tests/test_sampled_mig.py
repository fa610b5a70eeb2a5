"""MIG as Chen et al.'s code estimates it: the mixture entropies against a direct float64 sum, known answers on a
small factor grid, the grid's order through a renderer, and `aelab eval`'s keys and mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.errors import UserError
from aelab.metrics import sampled_mig as sm


def _direct_entropies(codes: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """-mean_s log (1/N) sum_n N(codes_s; mu_n, var_n) per dimension, all of it in float64 at once."""
    z, m, v = codes.double()[:, None], mu.double()[None], log_var.double()[None]
    logs = -0.5 * (math.log(2 * math.pi) + v + (z - m) ** 2 / v.exp())  # (S, N, K)
    return math.log(len(mu)) - torch.logsumexp(logs, 1).mean(0)


def test_mixture_entropies_match_a_direct_float64_sum() -> None:
    """Posteriors from very narrow (std 1e-3, where expanding the square would cancel in float32) to wide, codes
    drawn from their own posteriors: the blocked float32 differences agree with the float64 sum."""
    g = torch.Generator().manual_seed(0)
    num, dims = 3000, 3
    mu = torch.rand(num, dims, generator=g) * 6 - 3
    log_var = torch.rand(num, dims, generator=g) * 15 - 14  # std from 1e-3 to 1.6
    own = torch.randperm(num, generator=g)[:200]
    codes = mu[own] + torch.randn(len(own), dims, generator=g) * torch.exp(0.5 * log_var[own])
    found = sm.mixture_entropies(codes, own, mu, log_var, rows=16, cols=256)  # blocks with ragged edges
    assert found.dtype == torch.float64
    torch.testing.assert_close(found, _direct_entropies(codes, mu, log_var), rtol=0, atol=1e-3)


SIZES = (4, 6, 5)  # a small factor grid: 120 combinations


def _known_posteriors() -> tuple[torch.Tensor, torch.Tensor]:
    """Dimension 0 and 3 both hold factor 0, dimension 1 holds factor 1 alone, dimension 2 is the prior's noise:
    factor 1 is disentangled (gap 1), factor 0 is split over two dimensions (gap 0), factor 2 is held by none."""
    grid = torch.cartesian_prod(*(torch.arange(k) for k in SIZES)).float()
    mu = torch.stack([grid[:, 0], grid[:, 1], torch.zeros(len(grid)), 2 * grid[:, 0]], 1)
    log_var = torch.full_like(mu, 2 * math.log(0.01))
    log_var[:, 2] = 0.0
    return mu, log_var


def test_sampled_mig_gaps_known_answers() -> None:
    mu, log_var = _known_posteriors()
    gaps = sm.sampled_mig_gaps(mu, log_var, SIZES, [0, 1, 2], samples=1000)
    assert gaps[1] == pytest.approx(1.0, abs=0.01)
    assert gaps[0] == pytest.approx(0.0, abs=0.01) and gaps[2] == pytest.approx(0.0, abs=0.01)
    assert set(sm.sampled_mig_gaps(mu, log_var, SIZES, [1], samples=1000)) == {1}  # only the chosen factors
    with pytest.raises(ValueError, match="grid of 120"):
        sm.sampled_mig_gaps(mu[:-1], log_var[:-1], SIZES, [0])


class _IndexImages:
    """A factor source whose 'images' carry their factor indices (as pixel values), for the grid's order."""

    sizes = SIZES
    names = ("a", "b", "c")

    def render(self, factor_indices: torch.Tensor) -> torch.Tensor:
        return factor_indices.float().view(-1, 1, 1, len(SIZES))


def test_the_grid_is_encoded_in_its_row_major_order() -> None:
    """sampled_mig_score renders every combination and hands the posteriors over in the order the gaps read them:
    an encoder of the known posteriors gives the known answers through it."""
    def posterior(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = images.view(-1, len(SIZES))
        mu = torch.stack([f[:, 0], f[:, 1], torch.zeros(len(f)), 2 * f[:, 0]], 1)
        log_var = torch.full_like(mu, 2 * math.log(0.01))
        log_var[:, 2] = 0.0
        return mu, log_var

    mu, log_var = sm.grid_posteriors(posterior, _IndexImages(), batch_size=7)
    expected = _known_posteriors()
    assert torch.equal(mu, expected[0]) and torch.equal(log_var, expected[1])
    gaps = sm.sampled_mig_score(posterior, _IndexImages(), [0, 1, 2], samples=1000, batch_size=7)
    assert gaps == sm.sampled_mig_gaps(*expected, SIZES, [0, 1, 2], samples=1000)


# ---- aelab eval ---------------------------------------------------------------------------------------------------
def _trained(compose_cfg, run_dir, model: str, data: list[str]) -> None:
    from aelab.commands import train

    overrides = [*data, f"model={model}", "latent_dim=3", "epochs=1", "trainer.limit_batches=2", "batch_size=32",
                 "device=cpu", "logger=none"]
    train.run(compose_cfg(overrides), run_dir, overrides)


QUICK = ["device=cpu", "iw_samples=0", "probe.max_train=0", "noise=[]", "tensorboard=false", "num_images=0",
         "generation.samples=0", "disentanglement.enabled=false", "disentanglement.sampled_mig.enabled=true"]
DSPRITES = ["data=dsprites", "data.size=32", "data.subsample=300"]


@pytest.mark.parametrize(("model", "data", "extra", "key", "says"), [
    ("beta_vae", DSPRITES, ["disentanglement.sampled_mig.factors=[scale]"], "sampled_mig.factors", "expected a string"),
    ("beta_vae", DSPRITES, ["disentanglement.sampled_mig.factors=four"], "sampled_mig.factors", "all, chen"),
    ("ae", DSPRITES, [], "sampled_mig.enabled", "no Gaussian posterior"),
    ("vae", ["data=synthetic"], [], "sampled_mig.enabled", "has no known factors"),
])
def test_eval_names_the_key_of_a_sampled_mig_it_cannot_compute(compose_cfg, tmp_path, model, data, extra, key,
                                                               says) -> None:
    from aelab.commands import eval as eval_command

    _trained(compose_cfg, tmp_path, model, data)
    with pytest.raises(UserError, match=says) as raised:
        eval_command.run(compose_cfg([f"run={tmp_path}", *QUICK, *extra], "eval"))
    assert raised.value.key == f"disentanglement.{key}"
    assert not list(tmp_path.glob("eval/*/metrics.json"))  # refused before any metric was computed


@pytest.mark.slow
def test_eval_reports_the_sampled_mig_on_the_whole_dsprites_grid(compose_cfg, tmp_path) -> None:
    """The whole 737,280-image grid at 32 px, a few codes per entropy: Chen et al.'s four factors' gaps (dSprites'
    shape left out) and their mean."""
    from aelab.commands import eval as eval_command

    _trained(compose_cfg, tmp_path, "beta_vae", DSPRITES)
    out = eval_command.run(compose_cfg([f"run={tmp_path}", *QUICK, "disentanglement.sampled_mig.samples=20",
                                        "disentanglement.sampled_mig.factors=chen"], "eval"))
    gaps = [out[f"test/sampled_mig_gap/{name}"] for name in ("scale", "orientation", "posX", "posY")]
    assert "test/sampled_mig_gap/shape" not in out and "sampled_mig" in out["seconds"]
    assert all(0 <= gap <= 1 for gap in gaps) and out["test/sampled_mig"] == pytest.approx(sum(gaps) / 4)
