"""`aelab score run=<dir> data=...`: a per-example anomaly score, a threshold chosen on validation data, a flag.

Scores (higher = more anomalous, nats per example): recon_nll, the reconstruction NLL of the deterministic code
(every family); neg_elbo, the negative ELBO (families with a posterior); nll_iw, the importance-sampled NLL with
iw_samples=K. The threshold is the `threshold.quantile` of the chosen score on the run's own validation split
(normal data by assumption), kept in <run>/thresholds.json so later data is judged against the same number.
A CSV in gives a CSV out: the input's rows in their order, with the score columns and is_anomaly appended.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import SCORES, check_score
from aelab.errors import UserError
from aelab.files import atomic_path

THRESHOLDS = "thresholds.json"  # in the run directory, beside (never over) the training files


def chosen_score(cfg: DictConfig, model) -> str:
    """The score the flag is set by (threshold.score), if this family has it."""
    name, iw = str(cfg.threshold.score), int(cfg.iw_samples)
    if name in ("neg_elbo", "nll_iw") and not model.has_posterior:
        raise UserError("threshold.score", f"{name} needs a posterior q(z|x), {type(model).__name__} has none",
                        "recon_nll, or a VAE-type run")
    if name == "nll_iw" and iw <= 0:
        raise UserError("threshold.score", "nll_iw is only computed with importance samples", "set iw_samples=N, e.g. 100")
    return name


def example_scores(model, x, y, iw_samples: int, elbo_samples: int) -> dict[str, Any]:
    """Per example (B,) of each score this family has."""
    from aelab.metrics.likelihood import importance_sampled_nll
    from aelab.metrics.posterior import neg_elbo

    logits = model.decode(model.encode(x, y), y).float()
    out = {"recon_nll": model.likelihood.nll(logits, x.float())}
    if model.has_posterior:
        recon, kl = neg_elbo(model, x, y, samples=elbo_samples)  # a few draws: less noise in the ranking
        out["neg_elbo"] = recon + kl
        if iw_samples > 0:
            out["nll_iw"] = importance_sampled_nll(model, x, k=iw_samples, y=y)
    return out


def scores_of(model, batches, iw_samples: int, elbo_samples: int) -> dict[str, Any]:
    """Every score over an iterator of batches, as numpy arrays (N,), with the labels (or None)."""
    import numpy as np
    import torch

    parts: dict[str, list] = {}
    with torch.no_grad():
        for batch in batches:
            for name, value in example_scores(model, batch.x, batch.y, iw_samples, elbo_samples).items():
                parts.setdefault(name, []).append(value.double().cpu().numpy())
    return {name: np.concatenate(p) for name, p in parts.items()}


def threshold_for(session, name: str, quantile: float, iw_samples: int, elbo_samples: int,
                  stats: dict | None) -> tuple[float, str]:
    """The stored threshold of this checkpoint, score and quantile, or a new one from the validation split."""
    import numpy as np

    from aelab.data import build_data

    path = session.run.run_dir / THRESHOLDS
    # the checkpoint's step in the key: a run trained further (resume) gets a new threshold, not a stale one
    key = (f"{session.cfg.get('ckpt', 'last')}/step{session.step}/{name}" + (f"/iw{iw_samples}" if name == "nll_iw" else "")
           + f"/q{quantile:g}")
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if key in stored:
        return float(stored[key]["value"]), f"{THRESHOLDS} ({key})"
    try:
        val = build_data(session.config.data, session.device, standardization=stats).val
    except UserError as error:
        raise UserError("threshold.value", f"the run's validation data cannot be read to choose a threshold "
                        f"({error.problem})", "give one: threshold.value=<score>") from None
    scores = scores_of(session.model, val.batches(int(session.cfg.batch_size)), iw_samples, elbo_samples)[name]
    value = float(np.quantile(scores, quantile))
    stored[key] = {"value": value, "score": name, "quantile": quantile, "split": "val", "examples": int(len(scores)),
                   "ckpt": str(session.cfg.get("ckpt", "last")), "step": session.step,
                   "chosen": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(path, what="thresholds") as tmp:
        tmp.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return value, f"{quantile:g} quantile of {len(scores)} validation examples, kept in {THRESHOLDS}"


def run(cfg: DictConfig) -> dict[str, Any]:
    import shutil

    import numpy as np

    from aelab.commands._apply import applied_data, batches, refuse_run_paths, require_labels_if_conditional, write_csv

    check_score(cfg)
    with open_run(cfg, "score") as session:
        model = session.model
        name = chosen_score(cfg, model)
        iw, elbo_samples = int(cfg.iw_samples), int(cfg.elbo_samples)
        if iw > 0 and not model.has_posterior:
            raise UserError("iw_samples", f"importance sampling needs a posterior q(z|x), {type(model).__name__} "
                            "has none", "iw_samples=0, or a VAE-type run")
        applied = applied_data(session, str(cfg.split))
        require_labels_if_conditional(session, applied)
        target = Path(str(cfg.out)).expanduser() if cfg.get("out") else None
        if target is not None:
            refuse_run_paths(session, target, "out")
            if applied.table is not None and target.resolve() == applied.table.resolve():
                raise UserError("out", f"{target} is the input table", "another file: the input is never overwritten")
        scores = scores_of(model, batches(applied, int(cfg.batch_size), "scoring"), iw, elbo_samples)
        if cfg.threshold.value is not None:
            threshold, source = float(cfg.threshold.value), "threshold.value"
        else:
            threshold, source = threshold_for(session, name, float(cfg.threshold.quantile), iw, elbo_samples,
                                              applied.standardization)
        flag = scores[name] > threshold
        names = [n for n in SCORES if n in scores]
        header, rows = _rows(applied, scores, names, flag, cfg)
        out = session.out
        write_csv(out.dir / "scores.csv", header, rows)
        out.files["table"] = "scores.csv"
        if target is not None:
            with atomic_path(target, what="scores") as tmp:
                shutil.copyfile(out.dir / "scores.csv", tmp)
            out.files["out"] = str(target)
        info = {"data": applied.name, "examples": int(len(flag)), "score": name, "threshold": threshold,
                "threshold_from": source, "anomalies": int(flag.sum()),
                "anomaly_fraction": float(flag.mean()) if len(flag) else 0.0,
                **{f"mean_{n}": float(np.mean(scores[n])) for n in names}}
        out.metrics(info)
        files = dict(out.files)
    print_results(f"score: {info['anomalies']} of {info['examples']} flagged by {name} > {threshold:.4g}",
                  {**files, **info}, out.dir)
    return {**files, **info, "output_dir": str(out.dir)}


def _rows(applied, scores: dict[str, Any], names: list[str], flag, cfg: DictConfig) -> tuple[list[str], list[list]]:
    """A table's own rows (text as it was) with the scores appended; other data: index, label, file, scores."""
    from aelab.commands._apply import read_table_rows

    values = [[f"{scores[n][i]:.9g}" for n in names] + [int(flag[i])] for i in range(len(flag))]
    if applied.table is not None and str(cfg.split) == "all":
        delimiter = str(cfg.data.source.get("delimiter", ",")) if cfg.get("data") else ","
        header, text_rows = read_table_rows(applied.table, delimiter)
        if header is None:
            header = [str(i) for i in range(len(text_rows[0]) if text_rows else 0)]
        return [*header, *names, "is_anomaly"], [row + v for row, v in zip(text_rows, values)]
    header, ids = ["index"], [[i] for i in applied.index]
    labels = None
    if applied.split.has_labels:
        labels = [int(b.y[k]) for b in applied.split.batches(4096) for k in range(len(b))]
        header.append("label")
    if applied.names is not None:
        header.append("file")
    rows = []
    for i, v in enumerate(values):
        row = list(ids[i])
        if labels is not None:
            row.append(applied.label_name(labels[i]))
        if applied.names is not None:
            row.append(applied.names[i])
        rows.append(row + v)
    return [*header, *names, "is_anomaly"], rows


main = hydra_entry(run)
