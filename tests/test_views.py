"""TensorBoard / command pictures are built from the model interface alone."""

from __future__ import annotations

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
    assert views.manifold_figure(codes, labels, data.class_names).axes[0].get_title().startswith("latent manifold (z")


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
