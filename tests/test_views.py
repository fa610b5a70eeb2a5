"""TensorBoard / command pictures are built from the model interface alone."""

from __future__ import annotations

import pytest
import torch

from aelab.commands.interpolate import lerp, slerp
from aelab.data import build_data
from aelab.engine.build import build_model
from aelab.viz import views
from conftest import TINY


def _model(compose_cfg, *extra: str):
    cfg = compose_cfg([*TINY, *extra])
    data = build_data(cfg.data, torch.device("cpu"))
    return build_model(cfg, data.shape, data.num_classes).eval(), data


def test_grids_and_manifold(compose_cfg) -> None:
    model, data = _model(compose_cfg, "model=vae", "latent_dim=2")
    head = data.val.head(16)
    recon = views.reconstruction_grid(model, head.x, head.y, per_row=8)
    assert recon.shape[0] == 3 and recon.shape[1] > 4 * 16  # 4 rows: inputs, recons, inputs, recons
    assert views.latent_grid(model, None, n=5).shape[0] == 3
    codes, labels = views.latent_codes(model, data.val, limit=50)
    assert codes.shape == (50, 2) and labels.shape == (50,)
    assert views.manifold_plot(codes, labels, data.class_names).title.startswith("latent manifold (z")
    assert views.manifold_image(codes, labels, data.class_names).shape == (3, 500, 550)


def test_ticks_are_round_numbers_inside_the_range() -> None:
    from aelab.viz.scatter import nice_ticks

    assert nice_ticks(-11.3, 11.1) == [-10.0, -5.0, 0.0, 5.0, 10.0]
    assert nice_ticks(0.013, 0.061) == pytest.approx([0.02, 0.03, 0.04, 0.05, 0.06])
    assert nice_ticks(-1.05, 1.05) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])


def test_high_dimensional_codes_are_projected_with_pca() -> None:
    codes = torch.randn(200, 16) * torch.linspace(5, 0.1, 16)
    points, how = views.project_2d(codes)
    assert points.shape == (200, 2) and how == "PCA of z"
    assert points[:, 0].var() > 10  # the first component carries the widest direction


def test_interpolation_paths_hit_their_ends() -> None:
    a, b, t = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.linspace(0, 1, 5)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(slerp(a, b, t).norm(dim=1), torch.linspace(1, 2, 5), atol=1e-5)


def test_conditional_models_get_one_latent_grid_per_class(compose_cfg) -> None:
    model, _ = _model(compose_cfg, "model=cvae", "latent_dim=2")
    grids = views.latent_grids(model, None, n=4)
    assert sorted(grids) == [f"latent_grid/class_{c}" for c in range(4)]
    assert not torch.equal(grids["latent_grid/class_0"], grids["latent_grid/class_1"])
    assert list(views.latent_grids(model, None, n=4, label=2)) == ["latent_grid"]


FAMILY_VIEWS = [
    (["model=sparse_ae", "latent_dim=16"], {"val/activations"}, {"val/mean_activation_per_class"}, {"val/mean_activation"}),
    (["model=vae"], {"val/kl_per_dim"}, set(), {"val/kl_dim/00", "val/active_units"}),
    (["model=aae", "model.semi_supervised_fraction=0.5"], set(), {"val/style_transfer"}, {"val/accuracy"}),
    (["model=dae", "noise=0.3"], set(), {"val/denoising"}, set()),
    (["model=cvae", "latent_dim=2"], set(), {"val/style_transfer", "val/latent_grid/class_3"}, {"val/active_units"}),
    (["model=pca", "model.variance=0.9"], set(), {"val/latent_manifold"}, {"val/explained_variance"}),
]


@pytest.mark.parametrize("overrides, histograms, images, scalars", FAMILY_VIEWS, ids=[o[0][6:] for o, *_ in FAMILY_VIEWS])
def test_tensorboard_shows_what_each_family_adds(compose_cfg, tmp_path, overrides, histograms, images, scalars) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aelab.commands import train

    run = [*overrides, "epochs=1", "trainer.limit_batches=2", "logger=tensorboard", "logger.manifold_points=256"]
    train.run(compose_cfg([*TINY, *run]), tmp_path, run)
    tags = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0, "histograms": 0}).Reload().Tags()
    assert histograms <= set(tags["histograms"]) and images <= set(tags["images"]) and scalars <= set(tags["scalars"])
