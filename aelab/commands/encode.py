"""`aelab encode run=<dir> [data=...]`: the code of every example, for other models (features, retrieval, plots).

Writes codes.npy (N, D), for families with a Gaussian posterior also logvar.npy (N, D), and codes.csv with each
example's index, label (if any), file (folders) and code columns (and log-variances), plus codes.parquet when
pyarrow is installed; all into <run>/encode/<time>/.
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import check_encode
from aelab.files import atomic_path


def run(cfg: DictConfig) -> dict[str, Any]:
    import numpy as np
    import torch

    from aelab.commands._apply import applied_data, batches, require_labels_if_conditional

    check_encode(cfg)
    with open_run(cfg, "encode") as session:
        model = session.model
        applied = applied_data(session, str(cfg.split))
        require_labels_if_conditional(session, applied)
        started = time.perf_counter()
        codes, logvars, labels = [], [], []
        with torch.no_grad():
            for batch in batches(applied, int(cfg.batch_size), "encoding"):
                codes.append(model.encode(batch.x, batch.y).float().cpu())  # (B, D)
                if model.has_posterior:
                    logvars.append(model.posterior(batch.x, batch.y)[1].float().cpu())  # (B, D)
                if batch.y is not None:
                    labels.append(batch.y.cpu())
        z = torch.cat(codes).numpy()  # (N, D)
        logvar = torch.cat(logvars).numpy() if logvars else None
        y = torch.cat(labels).numpy() if labels else None
        seconds = time.perf_counter() - started
        out = session.out
        for name, array in (("codes", z), ("logvar", logvar)):
            if array is not None:
                with atomic_path(out.dir / f"{name}.npy", ".npy", what=name) as tmp:
                    np.save(tmp, array)
                out.files[name] = f"{name}.npy"
        header, columns = code_table(applied, z, logvar, y)
        from aelab.commands._apply import write_csv

        write_csv(out.dir / "codes.csv", header, zip(*columns))
        out.files["table"] = "codes.csv"
        if _parquet(out.dir / "codes.parquet", header, columns):
            out.files["parquet"] = "codes.parquet"
        info = {"data": applied.name, "examples": len(z), "code_dims": int(z.shape[1]),
                "log_variance": logvar is not None, "seconds": round(seconds, 3),
                "examples_per_s": round(len(z) / max(seconds, 1e-9), 1)}
        out.metrics(info)
        files = dict(out.files)
    print_results(f"encode: {len(z)} examples of {applied.name}", {**files, **info}, out.dir)
    return {**files, **info, "output_dir": str(out.dir)}


def code_table(applied, z, logvar, y) -> tuple[list[str], list[list[Any]]]:
    """Column names and columns: index, label, file, z0..z{D-1}, logvar0.. (what identifies a row comes first)."""
    header, columns = ["index"], [list(applied.index)]
    if y is not None:
        header.append("label")
        columns.append([applied.label_name(int(v)) for v in y])
    if applied.names is not None:
        header.append("file")
        columns.append(list(applied.names))
    dims = z.shape[1]
    header += [f"z{d}" for d in range(dims)]
    columns += [[f"{v:.9g}" for v in z[:, d]] for d in range(dims)]
    if logvar is not None:
        header += [f"logvar{d}" for d in range(dims)]
        columns += [[f"{v:.9g}" for v in logvar[:, d]] for d in range(dims)]
    return header, columns


def _parquet(path, header: list[str], columns: list[list[Any]]) -> bool:
    """The same table as Parquet (typed columns) when pyarrow is installed; nothing otherwise."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    typed = [col if name in ("label", "file") else [float(v) if name != "index" else int(v) for v in col]
             for name, col in zip(header, columns)]
    with atomic_path(path, what="codes as Parquet") as tmp:
        pq.write_table(pa.table(dict(zip(header, typed))), tmp)
    return True


main = hydra_entry(run)
