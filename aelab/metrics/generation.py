"""Generation quality in the feature space of a small classifier aelab trains once per dataset.

This is NOT Inception-FID: the features come from a small classifier trained on the dataset itself
(its test accuracy is reported with the distances, so the feature space can be judged), and the
numbers are only comparable between runs on the same dataset with the same cached classifier.
Fréchet distance (Heusel et al. 2017) between Gaussians fitted to real and generated features;
precision and recall as in Kynkäänniemi et al. (2019): k-NN balls around each set's features.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.data.base import DataModule, Split
from aelab.files import cache_not_written, data_dir, save_torch

FEATURES = 128
MIN_STEPS = 200
VERSION = 3  # bump when the classifier or its training changes: old cache files are then ignored


class FeatureNet(nn.Module):
    """Two stride-2 conv layers (images) or two hidden layers (vectors), a FEATURES-wide penultimate layer, a
    classifier. Strided convolutions rather than pooling: several times cheaper to train on a CPU."""

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(shape) == 3:
            side = lambda n: (n + 3) // 4  # noqa: E731  (two stride-2 convs with padding 1)
            self.body = nn.Sequential(
                nn.Conv2d(shape[0], 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                nn.Linear(64 * side(shape[1]) * side(shape[2]), FEATURES), nn.ReLU())
        else:
            self.body = nn.Sequential(nn.Linear(math.prod(shape), 256), nn.ReLU(), nn.Linear(256, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: Tensor) -> Tensor:  # (B, *shape) -> (B, FEATURES)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:  # (B, K) logits
        return self.head(self.body(x))


def fingerprint(data: DataModule) -> str:
    """Identifies the dataset as loaded (name, sizes, a hash of the first training examples)."""
    head = data.train.head(256)
    digest = hashlib.sha1(json.dumps({**data.describe(), "notes": None, "v": VERSION}, sort_keys=True).encode())
    digest.update(head.x.float().cpu().numpy().tobytes())
    if head.y is not None:
        digest.update(head.y.cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    return data_dir() / "feature_nets"


@torch.no_grad()
def accuracy(net: nn.Module, split: Split, batch_size: int = 1024) -> float:
    correct = count = 0
    for batch in split.batches(batch_size):
        correct += int((net(batch.x).argmax(1) == batch.y).sum())
        count += len(batch)
    return correct / max(count, 1)


def feature_net(data: DataModule, device: torch.device, epochs: int = 2, seed: int = 0,
                log=print) -> tuple[FeatureNet, float, Path]:
    """The dataset's feature classifier and its test accuracy: from the cache, or trained now and cached."""
    path = cache_dir() / f"{data.name}-{fingerprint(data)}.pt"
    # Its initial weights come from `seed`, not from whatever the process drew before (under pytest-xdist that
    # depends on which tests a worker ran first: the same data gave a test accuracy of 0.898 or 0.95); the
    # caller's random stream is left where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(data.shape, int(data.num_classes))
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"])
            return net.to(device).eval(), float(state["test_accuracy"]), path
        except Exception:  # a corrupt or stale cache file is retrained, never fatal
            pass
    log(f"training the feature classifier for {data.name} ({epochs} epochs, cached in {path.parent})")
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    steps, epoch = 0, 0
    with torch.enable_grad():  # callers measure under no_grad
        while epoch < epochs or steps < MIN_STEPS:  # small datasets: enough steps for a usable feature space
            for batch in data.train.batches(128, shuffle=True, generator=generator):
                loss = F.cross_entropy(net(batch.x), batch.y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
            epoch += 1
    net.eval()
    test_accuracy = accuracy(net, data.test)
    try:  # atomic: a concurrent eval never reads half a file
        save_torch({"model": net.state_dict(), "test_accuracy": test_accuracy, "data": data.describe()}, path,
                   "feature-net cache")
    except OSError as exc:  # the net is trained again next time: that costs time, not the result
        cache_not_written("feature-net cache", path, exc)
    return net, test_accuracy, path


@torch.no_grad()
def features_of(net: FeatureNet, images: Tensor, batch_size: int = 1024) -> np.ndarray:  # (N, FEATURES)
    return torch.cat([net.features(images[i : i + batch_size].float()).cpu()
                      for i in range(0, len(images), batch_size)]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature sets (N, F)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # singular covariances (fewer examples than features) are expected
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():  # near-singular product: the usual small ridge
            ridge = np.eye(len(cov_a)) * 1e-6
            root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def _kth_neighbour_radius(x: Tensor, k: int, chunk: int = 2048) -> Tensor:  # (N, F) -> (N,)
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (c, N)
        radii.append(d.topk(k + 1, largest=False).values[:, -1])  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def _inside_any_ball(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:  # (M,) bool
    return torch.cat([(torch.cdist(points[i : i + chunk], centres) <= radii).any(1)
                      for i in range(0, len(points), chunk)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """precision: share of generated features inside the real set's k-NN balls; recall: the other way round."""
    r, f = torch.from_numpy(real).float(), torch.from_numpy(fake).float()
    precision = _inside_any_ball(f, r, _kth_neighbour_radius(r, k)).float().mean()
    recall = _inside_any_ball(r, f, _kth_neighbour_radius(f, k)).float().mean()
    return {"precision": float(precision), "recall": float(recall)}


@torch.no_grad()
def generation_metrics(model, data: DataModule, split: Split, samples: int, batch_size: int,
                       epochs: int = 2, seed: int = 0, log=print, draw=None) -> dict[str, float]:
    """Fréchet distance and precision/recall of `samples` draws (`draw(n)`, default the model's prior) against as
    many real examples of the split; frechet_reference: the same distance between the split and the training
    split (what real data scores)."""
    net, test_accuracy, _ = feature_net(data, model.device, epochs, seed, log)
    real = split.head(samples).x
    n = len(real)
    draw = draw or model.sample
    fake = torch.cat([draw(min(batch_size, n - i)).float() for i in range(0, n, batch_size)])
    real_f, fake_f = features_of(net, real), features_of(net, fake)
    train_f = features_of(net, data.train.head(n).x)
    return {"frechet_distance": frechet_distance(real_f, fake_f), **precision_recall(real_f, fake_f),
            "frechet_reference": frechet_distance(real_f, train_f), "feature_net_accuracy": test_accuracy}
