"""`aelab reconstruct run=<dir> data=folder data.source.path=<in> out=<folder>`: a trained run applied to images.

Each image's reconstruction is written under its own relative name, at its own size (the model sees it resized to
the training size; the output is resized back), so a denoising or super-resolution run cleans a folder in place of
a copy. Other image data gives <index>.png files; a table gives reconstruction.csv in the table's own units.
A preview grid (inputs and reconstructions, row by row) goes to <run>/reconstruct/<time>/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import check_reconstruct
from aelab.errors import UserError
from aelab.files import atomic_path

PREVIEW_PER_ROW = 8


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.commands._apply import applied_data, batches, require_labels_if_conditional

    check_reconstruct(cfg)
    with open_run(cfg, "reconstruct") as session:
        model = session.model
        applied = applied_data(session, str(cfg.split))
        require_labels_if_conditional(session, applied)
        target = _target(session, applied, cfg)
        shown_x, shown_r, preview = [], [], int(cfg.preview)
        with torch.no_grad(), _writer(applied, target, model.images) as write:
            for batch in batches(applied, int(cfg.batch_size), "reconstructing"):
                recon = model.reconstruct(batch.x, batch.y).float()  # (B, *shape) in data space
                write(batch, recon)
                if model.images and sum(len(t) for t in shown_x) < preview:
                    shown_x.append(batch.x.float().cpu())
                    shown_r.append(recon.cpu())
        out = session.out
        if shown_x:
            out.picture("preview", _preview(torch.cat(shown_x)[:preview], torch.cat(shown_r)[:preview]),
                        tag="reconstruct/preview")
        info = {"data": applied.name, "examples": len(applied), "written_to": str(target)}
        out.metrics(info)
        files = dict(out.files)
    print_results(f"reconstruct: {len(applied)} examples of {applied.name}", {**files, **info}, out.dir)
    return {**files, **info, "output_dir": str(out.dir)}


def _target(session, applied, cfg: DictConfig) -> Path:
    """Where the reconstructions go: out=, else a folder of this command's results; never over the inputs."""
    from aelab.commands._apply import refuse_run_paths

    if not cfg.get("out"):
        return session.out.dir / ("images" if session.model.images else "reconstruction.csv")
    target = Path(str(cfg.out)).expanduser()
    refuse_run_paths(session, target, "out")
    if applied.folder is not None:
        src, dst = applied.folder.resolve(), target.resolve()
        if dst == src or src in dst.parents:
            raise UserError("out", f"{target} is the input folder or inside it", "a folder outside the input: the "
                            "inputs are never overwritten")
    if applied.table is not None and target.resolve() == applied.table.resolve():
        raise UserError("out", f"{target} is the input table", "another file: the input is never overwritten")
    if not session.model.images and target.suffix.lower() != ".csv":
        target = target / "reconstruction.csv"  # a table's reconstruction is one file: out= may name its folder
    return target


@contextlib.contextmanager
def _writer(applied, target: Path, images: bool) -> Iterator[Callable[[Any, Any], None]]:
    """The function writing each batch's reconstructions; every file appears whole or not at all."""
    if images:
        yield _image_writer(applied, target)
        return
    with _TableWriter(applied, target) as write:
        yield write


def _image_writer(applied, target: Path):
    """Writes each batch's images: folders under their relative names at their own size, others as <index>.png."""
    from PIL import Image

    from aelab.viz.images import to_uint8_hwc

    target.mkdir(parents=True, exist_ok=True)
    seen = [0]

    def write(batch, recon) -> None:
        for k in range(len(batch)):
            i = seen[0] + k
            image = recon[k].clamp(0, 1).cpu()  # (C, H, W)
            pixels = to_uint8_hwc(image if image.shape[0] == 3 else image.expand(3, -1, -1))
            picture = Image.fromarray(pixels if image.shape[0] == 3 else pixels[:, :, 0])
            if applied.names is not None and applied.folder is not None:
                name = applied.names[i]
                with Image.open(applied.folder / name) as original:
                    size = original.size  # (W, H): written back at the input's size
                picture = picture.resize(size, Image.Resampling.BILINEAR)
            else:
                name = f"{applied.index[i]:05d}.png"
            path = target / name
            with atomic_path(path, path.suffix, what="reconstruction") as tmp:
                picture.save(tmp)
        seen[0] += len(batch)

    return write


class _TableWriter(contextlib.ExitStack):
    """Rows of a table's reconstruction, back in the table's own units (the training statistics undone), written
    under a temporary name that becomes `target` when the block ends without error."""

    def __init__(self, applied, target: Path) -> None:
        import csv

        super().__init__()
        self.applied = applied
        self.file = self.enter_context(open(self.enter_context(atomic_path(target, what="reconstruction")), "w",
                                            newline=""))
        self.writer = csv.writer(self.file)
        columns = applied.columns or [f"x{d}" for d in range(len(applied.split.head(1).x[0]))]
        self.writer.writerow(["index", *(["label"] if applied.split.has_labels else []), *columns])
        self.seen = 0

    def __call__(self, batch, recon) -> None:
        import torch

        stats = self.applied.standardization
        values = recon.double().cpu()  # (B, D)
        if stats is not None:
            values = values * torch.tensor(stats["std"], dtype=torch.float64) + torch.tensor(stats["mean"], dtype=torch.float64)
        for k in range(len(batch)):
            row = [self.applied.index[self.seen + k]]
            if batch.y is not None:
                row.append(self.applied.label_name(int(batch.y[k])))
            self.writer.writerow(row + [f"{v:.9g}" for v in values[k].tolist()])
        self.seen += len(batch)


def _preview(x, recon):
    """Rows of inputs, each followed by the row of their reconstructions."""
    import torch

    from aelab.viz.images import grid

    rows = []
    for start in range(0, len(x), PREVIEW_PER_ROW):
        rows += [x[start : start + PREVIEW_PER_ROW], recon[start : start + PREVIEW_PER_ROW].clamp(0, 1)]
    return grid(torch.cat(rows), nrow=PREVIEW_PER_ROW)


main = hydra_entry(run)
