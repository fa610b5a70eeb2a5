"""TensorBoard logger: loss terms, reconstructions, latent manifold, latent grid, prior samples, family diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aelab.data.base import DataModule
from aelab.models.base import Autoencoder
from aelab.viz import views


class TensorBoardLogger:
    def __init__(self, log_dir: Path | str, start_step: int = 0, image_every: int = 1, num_images: int = 32,
                 manifold_points: int = 2000, grid_size: int = 15, num_samples: int = 64) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # start_step is the step of the checkpoint a resumed run starts from; purging what a
        # killed run logged after it keeps the curve free of duplicated steps.
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step > 0 else None)
        self.image_every, self.num_images = max(1, image_every), num_images
        self.manifold_points, self.grid_size, self.num_samples = manifold_points, grid_size, num_samples

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.last_step = step  # the final hparam/ values are logged at the run's last step
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    @torch.no_grad()
    def views(self, model: Autoencoder, data: DataModule, step: int, epoch: int) -> None:
        if epoch % self.image_every:
            return
        was_training = model.training
        model.eval()
        many = data.val.head(self.manifold_points)
        codes, labels = views.latent_codes(model, data.val, self.manifold_points)
        if views.is_image(data.shape):  # image grids
            head = data.val.head(self.num_images)
            self.writer.add_image("val/reconstructions", views.reconstruction_grid(model, head.x, head.y), step)
            if model.latent_dim == 2:
                for name, image in views.latent_grids(model, codes, self.grid_size).items():
                    self.writer.add_image(f"val/{name}", image, step)
            if model.has_prior:
                self.writer.add_image("samples/prior", views.prior_samples(model, self.num_samples), step)
        else:  # vectors: scatter plots
            self.writer.add_figure("val/reconstructions", views.reconstruction_figure(model, many.x, many.y), step)
            if model.latent_dim == 1:
                self.writer.add_figure("val/decoded_curve", views.decoded_curve_figure(model, many.x, many.y), step)
            if model.has_prior:
                self.writer.add_figure("samples/prior", views.samples_figure(model.sample(1000), many.x), step)
        self.writer.add_figure("val/latent_manifold", views.manifold_figure(codes, labels, data.class_names), step)
        self.writer.add_histogram("val/codes", codes, step)
        found = model.diagnostics(many)  # what this family shows beyond its loss terms
        for name, value in found.scalars.items():
            self.writer.add_scalar(f"val/{name}", value, step)
        for name, values in found.histograms.items():
            self.writer.add_histogram(f"val/{name}", values.float().cpu(), step)
        for name, image in found.images.items():
            self.writer.add_image(f"val/{name}", image, step)
        self.writer.flush()
        model.train(was_training)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        final = {f"hparam/{k}": v for k, v in metrics.items()}
        # Session records only, in this run's own event file. add_hparams would also write an experiment
        # record per run, and with several (a sweep under one --logdir) the HParams tab takes the first run's
        # as the whole experiment: one run's values as the only domain, its metrics only. Without them,
        # TensorBoard builds the experiment from every run's session: all runs side by side.
        _, session_start, session_end = hparams(clean, final)
        writer = self.writer._get_file_writer()
        writer.add_summary(session_start)
        writer.add_summary(session_end)
        for name, value in final.items():
            self.writer.add_scalar(name, value, getattr(self, "last_step", 0))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
