"""Disentanglement scores of a representation on data with known factors (dSprites).

BetaVAE score (Higgins et al. 2017), FactorVAE score (Kim & Mnih 2018), MIG (Chen et al. 2018), SAP
(Kumar et al. 2018) and DCI (Eastwood & Williams 2018), with the sample sizes and estimators of
disentanglement_lib's unsupervised study (Locatello et al. 2019) as defaults. All scores are higher-is-better
and lie in [0, 1]; the BetaVAE and FactorVAE scores are accuracies whose chance level is 1 / (number of factors).

MIG, SAP and DCI are pure functions of codes (N, D) and factor indices (N, F); the `*_score` wrappers
draw factors uniformly over the grid, render them and encode them. BetaVAE and FactorVAE need to fix
one factor and vary the rest, so they take the encoder and a factor source (something with `sizes` and
`render(indices (N, F) int64) -> images`, e.g. `DataModule.factors`). Everything is seeded by `seed`.

Where this code departs from disentanglement_lib (each named in the function's docstring): DCI's default
trees are a random forest, not gradient boosting (several CPU minutes per call on this 2-core machine:
estimator="gbt" restores it); SAP standardises
each code dimension before its linear SVM (C = 0.01 otherwise makes the score depend on the code's units);
FactorVAE's votes go to the real code dimension when some are pruned (the library indexes the
pruned list); the BetaVAE logistic regression is scikit-learn's current default (lbfgs, multinomial) with
more iterations, where the library ran the 2019 default (liblinear, one-vs-rest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

Encode = Callable[[Tensor], Tensor]  # images (N, C, H, W) float in [0, 1] -> codes (N, D)
DCI_ESTIMATORS = ("gbt", "forest")


class FactorSource(Protocol):
    sizes: tuple[int, ...]

    def render(self, factor_indices: Tensor) -> Tensor: ...  # (N, F) int64 -> (N, C, H, W) float


def sample_factors(sizes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """n factor-index vectors (n, F) drawn uniformly over the grid."""
    return np.stack([rng.integers(k, size=n) for k in sizes], axis=1)


@torch.no_grad()
def encode_factors(encode: Encode, source: FactorSource, factors: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Render factor indices (N, F) and encode them -> codes (N, D) float64."""
    codes = []
    for first in range(0, len(factors), batch_size):
        images = source.render(torch.from_numpy(factors[first : first + batch_size]))
        codes.append(encode(images).detach().cpu().double().numpy())
    return np.concatenate(codes).reshape(len(factors), -1)


# ---- BetaVAE score --------------------------------------------------------------------------------

def _beta_vae_points(encode: Encode, source: FactorSource, batch_size: int, num_points: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """num_points (feature, fixed factor) pairs: mean |z1 - z2| over a batch of pairs sharing one factor."""
    features, labels = [], []
    per_chunk = max(1, 4096 // batch_size)  # points per render/encode round
    for first in range(0, num_points, per_chunk):
        k = min(per_chunk, num_points - first)
        fixed = rng.integers(len(source.sizes), size=k)  # (k,)
        f1 = sample_factors(source.sizes, k * batch_size, rng).reshape(k, batch_size, -1)
        f2 = sample_factors(source.sizes, k * batch_size, rng).reshape(k, batch_size, -1)
        f2[np.arange(k), :, fixed] = f1[np.arange(k), :, fixed]
        z1 = encode_factors(encode, source, f1.reshape(k * batch_size, -1)).reshape(k, batch_size, -1)
        z2 = encode_factors(encode, source, f2.reshape(k * batch_size, -1)).reshape(k, batch_size, -1)
        features.append(np.abs(z1 - z2).mean(axis=1))  # (k, D)
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(encode: Encode, source: FactorSource, *, batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000, seed: int = 0) -> dict[str, float]:
    """Accuracy of a logistic regression naming the fixed factor from mean |z1 - z2| over `batch_size` pairs.

    Each point: pick a factor, draw `batch_size` pairs of factor vectors that share it, encode both
    sides and average the absolute code differences; a linear classifier learns which factor was fixed.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x_train, y_train = _beta_vae_points(encode, source, batch_size, num_train, rng)
    x_eval, y_eval = _beta_vae_points(encode, source, batch_size, num_eval, rng)
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)),
            "eval_accuracy": float(model.score(x_eval, y_eval))}


# ---- FactorVAE score ------------------------------------------------------------------------------

def _factor_vae_votes(encode: Encode, source: FactorSource, batch_size: int, num_votes: int,
                      global_var: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Votes (F, D): for a batch sharing one factor, which active dimension varies least (relative to global)."""
    votes = np.zeros((len(source.sizes), len(global_var)), dtype=np.int64)
    active_dims = np.flatnonzero(active)
    per_chunk = max(1, 4096 // batch_size)
    for first in range(0, num_votes, per_chunk):
        k = min(per_chunk, num_votes - first)
        fixed = rng.integers(len(source.sizes), size=k)
        f = sample_factors(source.sizes, k * batch_size, rng).reshape(k, batch_size, -1)
        f[np.arange(k), :, fixed] = f[np.arange(k), :1, fixed]  # every row takes the batch's first value
        z = encode_factors(encode, source, f.reshape(k * batch_size, -1)).reshape(k, batch_size, -1)
        local_var = z.var(axis=1, ddof=1)  # (k, D)
        least = active_dims[np.argmin(local_var[:, active] / global_var[active], axis=1)]
        np.add.at(votes, (fixed, least), 1)
    return votes


def factor_vae_score(encode: Encode, source: FactorSource, *, batch_size: int = 64, num_train: int = 10_000,
                     num_eval: int = 5_000, num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     seed: int = 0) -> dict[str, float]:
    """Majority-vote accuracy of naming the fixed factor from the code dimension of least normalised variance.

    Dimensions whose standard deviation over `num_variance_estimate` random points is below
    `prune_threshold` (an absolute threshold, as in the library: collapsed VAE units) take no part.
    """
    rng = np.random.default_rng(seed)
    codes = encode_factors(encode, source, sample_factors(source.sizes, num_variance_estimate, rng))
    global_var = codes.var(axis=0, ddof=1)  # (D,)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    train = _factor_vae_votes(encode, source, batch_size, num_train, global_var, active, rng)
    classifier = train.argmax(axis=0)  # (D,): the factor each dimension stands for
    evaluate = _factor_vae_votes(encode, source, batch_size, num_eval, global_var, active, rng)
    dims = np.arange(len(global_var))
    return {"train_accuracy": float(train[classifier, dims].sum() / train.sum()),
            "eval_accuracy": float(evaluate[classifier, dims].sum() / evaluate.sum()),
            "num_active_dims": float(active.sum())}


# ---- MIG ------------------------------------------------------------------------------------------

def _histogram_bins(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each code dimension cut into num_bins equal-width bins over its range -> (N, D) int in 0..num_bins-1."""
    out = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1]
        out[:, d] = np.digitize(codes[:, d], edges[:-1]) - 1  # the top edge falls in the last bin
    return out


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete samples with values 0..max."""
    ka, kb = a.max() + 1, b.max() + 1
    joint = np.bincount(a * kb + b, minlength=ka * kb).astype(np.float64)
    return _entropy(joint.reshape(ka, kb).sum(1)) + _entropy(joint.reshape(ka, kb).sum(0)) - _entropy(joint)


def mig_gaps(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict[int, float]:
    """MIG's parts: for each factor (by column index) the gap (top - second) of its MI with a code dimension, over
    H(factor). Codes (N, D) are discretised into `num_bins` equal-width histogram bins per dimension; factors (N, F)
    are indices. A constant factor carries no information to capture and has no entry. A factor with more values
    than bins cannot be fully captured by one binned dimension, so even a perfect code scores log(bins)/log(values)
    on it (0.81 for dSprites' 40 orientations)."""
    binned = _histogram_bins(np.asarray(codes, dtype=np.float64), num_bins)
    factors = np.asarray(factors, dtype=np.int64)
    if binned.shape[1] < 2:
        raise ValueError("MIG needs at least two code dimensions")
    gaps = {}
    for j in range(factors.shape[1]):
        h = _entropy(np.bincount(factors[:, j]).astype(np.float64))
        if h == 0:
            continue
        mi = np.sort([_mutual_information(binned[:, d], factors[:, j]) for d in range(binned.shape[1])])
        gaps[j] = float((mi[-1] - mi[-2]) / h)
    return gaps


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Mutual information gap: mean over factors of (top - second) MI with a code dimension, over H(factor)
    (`mig_gaps` gives each factor's)."""
    return float(np.mean(list(mig_gaps(codes, factors, num_bins).values())))


# ---- SAP ------------------------------------------------------------------------------------------

def sap(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        continuous: bool = False) -> float:
    """Separated attribute predictability: mean over factors of the gap between its two most predictive dimensions.

    Discrete factors (the library's choice for dSprites): the score of (dimension, factor) is the test
    accuracy of a one-feature linear SVM (C = 0.01, balanced classes). Unlike the library, each dimension
    is first standardised with training statistics, so the score does not depend on the code's units.
    continuous=True scores each pair by the squared correlation instead (test points unused).
    """
    codes_train, codes_test = np.asarray(codes_train, np.float64), np.asarray(codes_test, np.float64)
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    score = np.zeros((num_codes, num_factors))
    if continuous:
        for i in range(num_codes):
            for j in range(num_factors):
                cov = np.cov(codes_train[:, i], factors_train[:, j], ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
    else:
        from sklearn.svm import LinearSVC

        mean, std = codes_train.mean(0), codes_train.std(0)
        std[std < 1e-12] = np.inf  # a constant dimension becomes all zeros
        z_train, z_test = (codes_train - mean) / std, (codes_test - mean) / std
        for i in range(num_codes):
            for j in range(num_factors):
                svm = LinearSVC(C=0.01, class_weight="balanced").fit(z_train[:, i : i + 1], factors_train[:, j])
                score[i, j] = np.mean(svm.predict(z_test[:, i : i + 1]) == factors_test[:, j])
    top = np.sort(score, axis=0)
    return float(np.mean(top[-1] - top[-2]))


# ---- DCI ------------------------------------------------------------------------------------------

def _importance(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
                factors_test: np.ndarray, estimator: str, seed: int) -> tuple[np.ndarray, float, float]:
    """Importance matrix (D, F) of code dimensions for predicting each factor, and train/test accuracy."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    train_acc, test_acc = [], []
    for j in range(factors_train.shape[1]):
        if estimator == "gbt":
            model = GradientBoostingClassifier(random_state=seed)
        else:
            # every split sees every dimension (max_features=None): with sqrt(D) random candidates a
            # tree must often split on a useless dimension, which smears importance over all of them;
            # leaves of >= 20 points keep the trees from carving noise dimensions into importance
            model = RandomForestClassifier(n_estimators=50, max_features=None, min_samples_leaf=20,
                                           random_state=seed)
        model.fit(codes_train, factors_train[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes_train) == factors_train[:, j]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, j]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """1 - H(p) / log(K) of each distribution along `axis` (K outcomes), p normalised there first."""
    p = p + 1e-11
    p = p / p.sum(axis=axis, keepdims=True)
    return 1.0 - (-(p * np.log(p)).sum(axis=axis)) / np.log(p.shape[axis])


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix (D codes, F factors)."""
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    disentanglement = _one_minus_entropy(importance, axis=1) @ (weights.sum(1) / weights.sum())
    completeness = _one_minus_entropy(importance, axis=0) @ (weights.sum(0) / weights.sum())
    return float(disentanglement), float(completeness)


def dci(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        estimator: str = "forest", seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (classification accuracy, train and test).

    The importance of code dimension i for factor j is a tree ensemble's impurity importance when
    classifying factor j from all codes. estimator="gbt" is disentanglement_lib's choice, gradient boosted
    trees with scikit-learn's defaults (100 depth-3 trees per class: 11,300 trees for dSprites' factors,
    about 6 CPU minutes at 10,000 points of 10-dimensional codes); the default "forest" is a random forest
    of 50 trees (leaves of >= 20 points, every dimension considered at each split), about 20 CPU seconds.
    On the same codes (image moments plus noise) the two agreed within 0.02 on all three numbers.
    """
    if estimator not in DCI_ESTIMATORS:
        raise ValueError(f"estimator must be one of {DCI_ESTIMATORS}, got {estimator!r}")
    importance, train_acc, test_acc = _importance(np.asarray(codes_train, np.float64), np.asarray(factors_train),
                                                  np.asarray(codes_test, np.float64), np.asarray(factors_test),
                                                  estimator, seed)
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness_train": train_acc, "informativeness_test": test_acc}


# ---- the same three, drawing their points from a factor source ------------------------------------

def mig_gaps_score(encode: Encode, source: FactorSource, *, num_points: int = 10_000, num_bins: int = 20,
                   seed: int = 0) -> dict[int, float]:
    """Each factor's MIG gap (`mig_gaps`) on `num_points` random grid points rendered and encoded."""
    factors = sample_factors(source.sizes, num_points, np.random.default_rng(seed))
    return mig_gaps(encode_factors(encode, source, factors), factors, num_bins)


def mig_score(encode: Encode, source: FactorSource, *, num_points: int = 10_000, num_bins: int = 20,
              seed: int = 0) -> float:
    """MIG on `num_points` random grid points rendered and encoded."""
    gaps = mig_gaps_score(encode, source, num_points=num_points, num_bins=num_bins, seed=seed)
    return float(np.mean(list(gaps.values())))


def _train_test(encode: Encode, source: FactorSource, num_train: int, num_test: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f_train, f_test = sample_factors(source.sizes, num_train, rng), sample_factors(source.sizes, num_test, rng)
    return encode_factors(encode, source, f_train), f_train, encode_factors(encode, source, f_test), f_test


def sap_score(encode: Encode, source: FactorSource, *, num_train: int = 10_000, num_test: int = 5_000,
              continuous: bool = False, seed: int = 0) -> float:
    """SAP on random grid points (10,000 to fit the per-dimension classifiers, 5,000 to score them)."""
    return sap(*_train_test(encode, source, num_train, num_test, seed), continuous=continuous)


def dci_score(encode: Encode, source: FactorSource, *, num_train: int = 10_000, num_test: int = 5_000,
              estimator: str = "forest", seed: int = 0) -> dict[str, float]:
    """DCI on random grid points (10,000 to fit the trees, 5,000 to test them)."""
    return dci(*_train_test(encode, source, num_train, num_test, seed), estimator=estimator, seed=seed)


# ---- all five, as aelab eval reports them ---------------------------------------------------------------
def disentanglement_scores(encode: Encode, source: FactorSource, *, num_train: int = 10_000, num_eval: int = 5_000,
                           batch_size: int = 64, variance_points: int = 10_000, bins: int = 20,
                           dci_estimator: str = "forest", sap_continuous: bool = False, seed: int = 0,
                           timings: dict[str, float] | None = None) -> dict[str, float]:
    """BetaVAE, FactorVAE, MIG, SAP and DCI under the names eval writes (`betavae_score`, `factorvae_score`,
    `mig`, `sap`, `dci_disentanglement`, `dci_completeness`, `dci_informativeness`).

    MIG, SAP and DCI share one draw of num_train + num_eval grid points (MIG on the num_train ones: 10,000 by
    default, its protocol's size), so those images are rendered and encoded once.
    """
    import time

    out: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        if timings is not None:
            timings[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    beta = beta_vae_score(encode, source, batch_size=batch_size, num_train=num_train, num_eval=num_eval, seed=seed)
    out["betavae_score"] = beta["eval_accuracy"]
    lap("betavae")
    factor = factor_vae_score(encode, source, batch_size=batch_size, num_train=num_train, num_eval=num_eval,
                              num_variance_estimate=variance_points, seed=seed)
    out["factorvae_score"] = factor["eval_accuracy"]
    lap("factorvae")
    codes_train, f_train, codes_test, f_test = _train_test(encode, source, num_train, num_eval, seed)
    out["mig"] = mig(codes_train, f_train, bins)
    out["sap"] = sap(codes_train, f_train, codes_test, f_test, continuous=sap_continuous)
    lap("mig_sap")
    found = dci(codes_train, f_train, codes_test, f_test, estimator=dci_estimator, seed=seed)
    out.update(dci_disentanglement=found["disentanglement"], dci_completeness=found["completeness"],
               dci_informativeness=found["informativeness_test"])
    lap("dci")
    return out
