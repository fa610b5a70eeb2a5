"""Latent quality: how well a linear classifier and k nearest neighbours read the labels from the codes.

Both are fitted on training-split codes and scored on the evaluated split; PCA with as many components
as the code has gives the reference line a learned code should beat.
"""

from __future__ import annotations

import numpy as np
import torch

from aelab.data.base import Split
from aelab.models.base import Autoencoder


@torch.no_grad()
def codes_of(model: Autoencoder, split: Split, batch_size: int,
             limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Codes (N, D), labels (N,) and flattened inputs (N, P) of the first `limit` examples (all: None)."""
    codes, labels, inputs = [], [], []
    seen = 0
    for batch in split.batches(batch_size):
        codes.append(model.encode(batch.x, batch.y).float().cpu())
        inputs.append(batch.x.flatten(1).float().cpu())
        if batch.y is not None:
            labels.append(batch.y.cpu())
        seen += len(batch)
        if limit is not None and seen >= limit:
            break
    cut = slice(0, limit)
    return (torch.cat(codes)[cut].numpy(), torch.cat(labels)[cut].numpy() if labels else None,
            torch.cat(inputs)[cut].numpy())


def probe_accuracies(train_codes: np.ndarray, train_y: np.ndarray, test_codes: np.ndarray, test_y: np.ndarray,
                     neighbors: int = 5, seed: int = 0) -> dict[str, float]:
    """Test accuracy of a logistic-regression probe (standardised codes) and of a k-NN classifier (raw codes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(train_codes, train_y)
    knn = KNeighborsClassifier(n_neighbors=min(neighbors, len(train_codes))).fit(train_codes, train_y)
    return {"probe_accuracy": float(probe.score(test_codes, test_y)),
            "knn_accuracy": float(knn.score(test_codes, test_y))}


def pca_reference(train_inputs: np.ndarray, test_inputs: np.ndarray, components: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA codes of the training and test inputs, with `components` components (fitted on training inputs)."""
    from sklearn.decomposition import PCA

    k = max(1, min(components, train_inputs.shape[1], len(train_inputs)))
    pca = PCA(n_components=k, svd_solver="randomized" if k < 0.8 * train_inputs.shape[1] else "full",
              random_state=seed).fit(train_inputs)
    return pca.transform(train_inputs), pca.transform(test_inputs)


def latent_probes(model: Autoencoder, train: Split, test: Split, batch_size: int, max_train: int | None,
                  neighbors: int = 5, seed: int = 0) -> dict[str, float]:
    """probe / k-NN accuracy of the model's codes and of PCA codes of the same size (pca_ prefix)."""
    train_codes, train_y, train_x = codes_of(model, train, batch_size, max_train)
    test_codes, test_y, test_x = codes_of(model, test, batch_size)
    if train_y is None or test_y is None or len(np.unique(train_y)) < 2:
        return {}
    out = probe_accuracies(train_codes, train_y, test_codes, test_y, neighbors, seed)
    pca_train, pca_test = pca_reference(train_x, test_x, test_codes.shape[1], seed)
    out.update({f"pca_{k}": v for k, v in probe_accuracies(pca_train, train_y, pca_test, test_y, neighbors, seed).items()})
    return out
