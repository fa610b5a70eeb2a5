"""Anomaly detection: how well a per-example score (reconstruction error, negative ELBO) ranks outliers first."""

from __future__ import annotations

import numpy as np
import torch

from aelab.data.base import Split
from aelab.models.base import Autoencoder


@torch.no_grad()
def anomaly_scores(model: Autoencoder, split: Split, batch_size: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per example: the reconstruction NLL of the deterministic code ('recon'), and for families with a
    posterior the negative ELBO ('elbo'); with the labels (or None)."""
    from aelab.metrics.posterior import neg_elbo

    scores: dict[str, list[np.ndarray]] = {"recon": []}
    labels = []
    for batch in split.batches(batch_size):
        logits = model.decode(model.encode(batch.x, batch.y), batch.y).float()
        scores["recon"].append(model.likelihood.nll(logits, batch.x.float()).cpu().numpy())
        if model.has_posterior:
            recon, kl = neg_elbo(model, batch.x, batch.y, samples=4)  # a few draws: less noise in the ranking
            scores.setdefault("elbo", []).append((recon + kl).cpu().numpy())
        if batch.y is not None:
            labels.append(batch.y.cpu().numpy())
    y = np.concatenate(labels) if labels else None
    return {name: (np.concatenate(parts), y) for name, parts in scores.items()}


def detection_scores(score: np.ndarray, is_anomaly: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision, anomalies as the positive class) of a score that is high for anomalies."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if is_anomaly.all() or not is_anomaly.any():
        return {}
    score = np.nan_to_num(score.astype(np.float64), nan=np.inf, posinf=np.finfo(np.float64).max)  # NaN: most anomalous
    return {"auroc": float(roc_auc_score(is_anomaly, score)), "auprc": float(average_precision_score(is_anomaly, score))}


def anomaly_metrics(model: Autoencoder, split: Split, batch_size: int, normal: list[int] | None = None,
                    outliers: Split | None = None) -> dict[str, float]:
    """normal=[classes]: those classes of the split are normal, the rest anomalies; outliers=<split of another
    dataset>: the whole split is normal, the outliers anomalies. Keys anomaly_<score>_<auroc|auprc>."""
    inside = anomaly_scores(model, split, batch_size)
    outside = anomaly_scores(model, outliers, batch_size) if outliers is not None else None
    out: dict[str, float] = {}
    for name, (score, labels) in inside.items():
        if outside is not None:
            other = outside[name][0]
            score, is_anomaly = np.concatenate([score, other]), np.r_[np.zeros(len(score)), np.ones(len(other))]
        else:
            is_anomaly = ~np.isin(labels, np.asarray(normal or [], dtype=np.int64))
        out.update({f"anomaly_{name}_{k}": v for k, v in detection_scores(score, is_anomaly.astype(bool)).items()})
    return out
