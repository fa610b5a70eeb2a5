"""The course's AAE on a grid prior: ten uniform patches (a 3x3 lattice plus one below it), one per class; the
manifold picture draws the prior's samples behind the codes and the decoded latent grid spans the prior's support."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.errors import UserError
from aelab.models.priors import PATCH, LatentPrior
from aelab.viz import views
from aelab.viz.epoch_report import PictureOptions, Report
from conftest import TINY

CPU = torch.device("cpu")
SIDE = 2 / 3  # a cell of the 3x3 lattice on [-1, 1]^2
HALF = SIDE * PATCH / 2  # half a patch's side


def _model(compose_cfg, *overrides: str):
    cfg = compose_cfg([*TINY, "model=aae", *overrides])
    data = build_data(cfg.data, CPU)
    torch.manual_seed(0)
    return build_model(cfg, data.shape, data.num_classes).eval(), data


def _course_prior() -> LatentPrior:
    return LatentPrior("grid", 2, num_modes=10, grid_size=3, grid_extra=1)


def test_the_course_grid_has_ten_disjoint_patches_the_tenth_below_the_lattice() -> None:
    prior = _course_prior()
    assert prior.regions == 10
    labels = torch.arange(10).repeat(300)
    drawn = prior.sample(len(labels), labels, CPU, torch.Generator().manual_seed(0))
    low = torch.stack([drawn[labels == c].min(0).values for c in range(10)])  # (10, 2): each class's box
    high = torch.stack([drawn[labels == c].max(0).values for c in range(10)])
    assert (high - low).max() <= 2 * HALF + 1e-6  # each class fills one patch, no more
    for a in range(10):  # no two classes' boxes overlap: the gaps keep the patches apart
        for b in range(a + 1, 10):
            apart = (low[a] > high[b]) | (low[b] > high[a])
            assert apart.any(), (a, b)
    lattice = torch.stack([torch.arange(9) % 3, torch.arange(9) // 3], 1) * SIDE - 1 + SIDE / 2
    assert torch.allclose((low[:9] + high[:9]) / 2, lattice, atol=0.02)  # nine patches in the middle of their cells
    assert high[9, 1] < -1 < low[:9, 1].min()  # the tenth lies below the lattice ...
    assert abs(float(low[9, 0] + high[9, 0]) / 2) < 0.02  # ... under its middle column
    unlabelled = prior.sample(5000, None, CPU, torch.Generator().manual_seed(1))
    nearest = torch.cdist(unlabelled, prior.grid_centres(CPU)).argmin(1)
    assert (unlabelled - prior.grid_centres(CPU)[nearest]).abs().max() <= HALF + 1e-6  # all inside some patch
    assert torch.bincount(nearest, minlength=10).min() > 350  # and every patch drawn about as often


def test_a_supervised_aae_draws_each_class_from_its_own_patch(compose_cfg) -> None:
    model, data = _model(compose_cfg, "latent_dim=2", "model.prior=grid", "model.grid_size=2", "model.grid_extra=1",
                         "model.supervised=true")
    assert model.prior.regions == 5 and data.num_classes == 4
    codes = model.prior_codes(400)  # every class's region in turn
    centres = model.prior.grid_centres(CPU)
    owner = torch.cdist(codes, centres).argmin(1)
    assert torch.equal(owner, torch.arange(400) % 4)  # class c's draws sit in patch c (the fifth is unused)
    assert (codes - centres[owner]).abs().max() <= 1.0 * PATCH / 2 + 1e-6  # inside it: a 2x2 lattice's cell is 1 wide
    assert model.sample(8, torch.arange(8) % 4).shape == (8, *data.shape)


def test_the_preset_is_the_courses_supervised_ten_patch_grid(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=aae_grid"])
    m = cfg.model
    assert (m.prior, m.grid_size, m.grid_extra, m.supervised, m.adv_weight) == ("grid", 3, 1, True, 1.0)
    assert cfg.trainer.optimizer.weight_decay == 1e-6 and (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-3, 128, 10)
    assert cfg.latent_dim == 2 and cfg.seed == 3  # the seed that matched the patches (see the preset)


BAD_GRID_EXTRA = [
    (["model.prior=grid", "model.grid_extra=-1"], "out of range"),
    (["model.prior=grid", "model.grid_extra=4"], "holds 0 to 3 patches"),
    (["model.prior=grid", "model.grid_extra=1.5"], "expected"),
    (["model.prior=uniform", "model.grid_extra=1"], "only the grid prior"),
]


@pytest.mark.parametrize("extra, problem", BAD_GRID_EXTRA, ids=[" ".join(e) for e, _ in BAD_GRID_EXTRA])
def test_a_wrong_grid_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys, extra: list[str], problem: str) -> None:
    """The command line's pre-check (before Hydra starts any work) names the key and what is allowed."""
    from aelab import cli

    def no_command(name: str):
        raise AssertionError(f"the pre-check let {extra} through to {name}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("AELAB_DEBUG", raising=False)
    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=no_command))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "model=aae", "latent_dim=2", "data=synthetic", *extra])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: model.grid_extra:") and problem in lines[0], lines[0]


def test_too_few_patches_for_the_classes_names_grid_extra(compose_cfg) -> None:
    with pytest.raises(UserError, match="model.grid_extra") as error:  # 4 classes, 1 + 1 patches
        _model(compose_cfg, "latent_dim=2", "model.prior=grid", "model.grid_size=1", "model.grid_extra=1",
               "model.supervised=true")
    assert error.value.key == "model.supervised" and "\n" not in error.value.line()


def test_the_manifold_draws_the_prior_in_grey_behind_the_codes(compose_cfg) -> None:
    model, data = _model(compose_cfg, "latent_dim=2", "model.prior=grid", "model.grid_extra=1", "model.supervised=true")
    report = Report()
    views.split_pictures(report, model, data.val, PictureOptions(num_images=4, manifold_points=120, grid_size=3,
                                                                 num_samples=4), data.class_names)
    image = report.images["latent_manifold"]
    assert image.shape == (3, 500, 550) and "latent_manifold" not in report.figures  # a picture, not a figure
    codes, labels = views.latent_codes(model, data.val, 120)
    plot = views.manifold_plot(codes, labels, data.class_names, views.prior_codes(model, 120))
    prior, drawn_codes = plot.layers  # the prior first, so the codes are drawn over it
    assert prior.name == "prior" and prior.colors == views.PRIOR_GREY and drawn_codes.name == "codes"
    owner = torch.cdist(prior.points, model.prior.grid_centres(CPU)).argmin(1)
    assert len(prior.points) == 120 and sorted(set(owner.tolist())) == list(range(data.num_classes))  # every patch
    assert plot.legend[0] == ("prior samples", views.PRIOR_GREY)


def test_a_point_drawn_later_covers_one_drawn_before() -> None:
    from aelab.viz.scatter import Layer, Plot, draw

    under = Layer("prior", torch.tensor([[0.0, 0.0], [1.0, 1.0]]), views.PRIOR_GREY, alpha=1.0, radius=4)
    over = Layer("codes", torch.tensor([[0.0, 0.0]]), (255, 0, 0), alpha=1.0, radius=4)
    pixels = (draw(Plot([under, over], "t", "x", "y")) * 255).round().long()  # (3, H, W)
    red = (pixels[0] == 255) & (pixels[1] == 0) & (pixels[2] == 0)
    grey = (pixels == torch.tensor(views.PRIOR_GREY)[:, None, None]).all(0)
    assert red.sum() > 20 and grey.sum() > 20  # the shared point is red (on top), the other grey
    ry, rx = red.nonzero().float().mean(0)
    gy, gx = grey.nonzero().float().mean(0)
    assert rx < gx and ry > gy  # (0, 0) left of and below (1, 1): data y grows upwards on the picture


def test_the_manifold_has_no_prior_layer_without_a_prior_and_projects_it_beyond_2d(compose_cfg) -> None:
    ae, data = _model(compose_cfg, "model=ae", "latent_dim=2")
    codes, labels = views.latent_codes(ae, data.val, limit=50)
    plot = views.manifold_plot(codes, labels, data.class_names, views.prior_codes(ae, 50))
    assert views.prior_codes(ae, 50) is None and [layer.name for layer in plot.layers] == ["codes"]
    aae, _ = _model(compose_cfg, "latent_dim=8", "model.prior=uniform")
    codes, labels = views.latent_codes(aae, data.val, limit=50)
    prior = views.prior_codes(aae, 300)
    assert prior is not None and prior.shape == (300, 8)
    plot = views.manifold_plot(codes, labels, data.class_names, prior)
    assert [layer.name for layer in plot.layers] == ["prior", "codes"]
    assert plot.layers[0].points.shape == (300, 2)  # on the codes' PCA plane
    assert plot.title.startswith("latent manifold (PCA of z")


def test_the_decoded_grid_spans_the_priors_support_on_each_axis(compose_cfg) -> None:
    model, _ = _model(compose_cfg, "latent_dim=2", "model.prior=grid", "model.grid_extra=1")
    xs, ys = views.latent_axes(model, None, 15)
    centres = model.prior.grid_centres(CPU)
    assert xs.min() <= centres[:, 0].min() - HALF and xs.max() >= centres[:, 0].max() + HALF  # every patch ...
    assert ys.min() <= centres[:, 1].min() - HALF and ys.max() >= centres[:, 1].max() + HALF  # ... the tenth too
    assert ys.min() < -1 < -0.9 <= xs.min()  # y reaches below the lattice, x does not
    assert views.latent_grid(model, None, n=5).shape[0] == 3
    low, high = views.traversal_range(model, None)
    box_low, box_high = torch.tensor([-1, -1 - SIDE]), torch.ones(2)  # traversals: 2%..98% of each axis's box
    assert torch.allclose(low, box_low + 0.02 * (box_high - box_low))
    assert torch.allclose(high, box_low + 0.98 * (box_high - box_low))
    vae, _ = _model(compose_cfg, "model=vae", "latent_dim=2")
    xs, ys = views.latent_axes(vae, None, 5)  # a symmetric prior: one coordinate's quantiles on both axes
    assert torch.equal(xs, ys) and abs(float(xs[0]) + 1.645) < 1e-3
