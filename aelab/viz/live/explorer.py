"""The model side of `aelab explore`: a split's codes on a plane, and the decode of any code, live.

A plane is an origin o (D,) and two orthonormal directions B (D, 2); a code z sits at (z - o) B on it. A point p
of the plane maps back to a full code by moving the current code z within the plane: z + B (p - (z - o) B).
For two chosen dimensions (o = 0, B = their unit vectors) that sets those two and keeps the others of z; for PCA
(o = the codes' mean, B = their first two principal directions) it keeps z's part off the plane. 2-D codes are
the plane itself; a 1-D code is the x axis (the points are spread on y for visibility only).

Written once against the model interface: encode, decode -> logits, the likelihood's mean, the KL per dimension
of families with a Gaussian posterior (the sliders' order), the prior's draws, decoding by class.
"""

from __future__ import annotations

import base64
import itertools
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aelab.data.base import Split
from aelab.models.base import Autoencoder
from aelab.viz.live.server import BadRequest
from aelab.viz.views import latent_codes, prior_quantiles, traversal_order

MAX_STEPS = 64  # interpolation frames one request may ask for
Path = Callable[[Tensor, Tensor, Tensor], Tensor]  # a (D,), b (D,), t (T,) -> (T, D): lerp or slerp


@dataclass(frozen=True)
class Plane:
    key: str  # "pca" or "i,j" (or "0" for 1-D codes)
    origin: Tensor  # (D,) float64
    basis: Tensor  # (D, 2) float64, orthonormal columns (the second is 0 for 1-D codes)
    axes: tuple[str, str]
    bounds: Tensor  # (2, 2): [[x_low, x_high], [y_low, y_high]], what the page draws

    def coords(self, z: Tensor) -> Tensor:  # (N, D) -> (N, 2)
        return (z - self.origin) @ self.basis

    def lift(self, z: Tensor, point: Tensor) -> Tensor:  # (D,), (2,) -> (D,): z moved within the plane to point
        return z + self.basis @ (point - self.coords(z[None])[0])


def prior_draws(model: Autoencoder, n: int) -> Tensor | None:
    """n codes (n, D) from the model's own prior, asked of the family (its prior_codes, else prior(n)), else drawn
    coordinate-wise through its prior_quantile; None for families without a prior."""
    if not model.has_prior:
        return None
    for name in ("prior_codes", "prior"):
        draw = getattr(model, name, None)
        if callable(draw):
            return draw(n).detach().double().cpu()
    u = torch.rand(n).clamp(1e-4, 1 - 1e-4)
    q = model.prior_quantile(u).double().cpu()  # (n,) shared by every coordinate, or (n, D) each its own
    if q.dim() == 2:
        return q[torch.rand(n, model.latent_dim).argsort(0), torch.arange(model.latent_dim)]  # decorrelated columns
    return torch.stack([q[torch.randperm(n)] for _ in range(model.latent_dim)], dim=1)


def _round(values: Tensor, digits: int = 5) -> list:
    """Floats (any shape) as nested lists of short decimals; NaN and infinities become None (JSON has neither)."""
    return _round_list(values.tolist(), digits)


def _round_list(values: Any, digits: int) -> Any:
    if isinstance(values, list):
        return [_round_list(v, digits) for v in values]
    return float(f"{values:.{digits}g}") if math.isfinite(values) else None


def _span(low: Tensor, high: Tensor, pad: float = 0.05) -> tuple[Tensor, Tensor]:
    """low, high widened by `pad` of their width; a zero width becomes 1 around the point."""
    width = high - low
    flat = width <= 1e-9
    low, high = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
    width = high - low
    return low - pad * width, high + pad * width


class Explorer:
    """What the page asks of a trained model; every request is checked here and refused as BadRequest."""

    def __init__(self, model: Autoencoder, split: Split, *, points: int = 2000, class_names: list[str] | None = None,
                 standardization: Mapping[str, list] | None = None, prior: Tensor | None = None,
                 prior_source: str | None = None, paths: Mapping[str, Path], method: str = "lerp", steps: int = 10,
                 run_name: str = "", data_name: str = "", split_name: str = "test", batch_size: int = 1000) -> None:
        self.model, self.split, self.paths = model.eval(), split, dict(paths)
        self.method, self.steps = method, int(steps)
        self.run_name, self.data_name, self.split_name = run_name, data_name, split_name
        self.lock = threading.Lock()  # one decode at a time: the page sends one, a second tab waits its turn
        self.dtype = next(itertools.chain(model.parameters(), model.buffers())).dtype
        with torch.no_grad():
            codes, labels = latent_codes(model, split, max(1, int(points)), batch_size)  # (N, D), (N,)
            head = split.head(min(len(split), 2000))
            self.order, kl = traversal_order(model, head.x, head.y)
        self.codes, self.labels = codes.double(), labels
        self.kl = None if kl is None else kl.double()
        self.d = self.codes.shape[1]
        self.prior = None if prior is None else prior.detach().double().cpu().reshape(-1, self.d)
        self.prior_source = prior_source if self.prior is not None else None
        # each dimension's range (the sliders'): every code, the model's prior's 0.5%..99.5% (its quantiles), and
        # those of the draws shown (a fitted density), 5% wider
        low, high = self.codes.min(0).values, self.codes.max(0).values
        with torch.no_grad():
            quantiles = [prior_quantiles(model, torch.tensor([0.005, 0.995])).double()] if model.has_prior else []
        if self.prior is not None and len(self.prior) > 1:
            quantiles.append(torch.quantile(self.prior, torch.tensor([0.005, 0.995], dtype=torch.float64), dim=0))
        for q in quantiles:
            low, high = torch.minimum(low, q[0]), torch.maximum(high, q[1])
        self.low, self.high = _span(low, high)
        width = self.high - self.low
        self.limit = (self.low - width, self.high + width)  # what a request may ask for: the range and as much again
        self.stats = None if standardization is None else {
            "mean": torch.tensor(standardization["mean"], dtype=torch.float64),
            "std": torch.tensor(standardization["std"], dtype=torch.float64)}
        columns = None if standardization is None else standardization.get("columns")
        self.columns = None if model.images else list(columns or [f"x{i}" for i in range(model.input_shape[0])])
        # decoding by class: conditional families take the label; the supervised AAE's classes are regions of
        # its code space, so there a code moves by the difference of the class means (latent arithmetic)
        k = int(model.num_classes or 0) if model.samples_by_class else 0
        self.by_class = "label" if model.conditional and k else ("shift" if k and labels is not None else None)
        self.classes = k if self.by_class else 0
        self.centres: Tensor | None = None
        if self.by_class == "shift":
            centres = torch.full((k, self.d), float("nan"), dtype=torch.float64)
            for c in range(k):
                members = self.codes[labels == c]
                if len(members):
                    centres[c] = members.mean(0)
            self.centres = centres
        top = int(labels.max()) + 1 if labels is not None and len(labels) else 0
        count = max(k, top, len(class_names or []))
        self.class_names = [str(class_names[c]) if class_names and c < len(class_names) else str(c) for c in range(count)]
        self._planes: dict[str, Plane] = {}

    # ---- the endpoints ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        model = self.model
        kl = self.kl
        return {
            "run": self.run_name, "family": type(model).__name__, "data": self.data_name, "split": self.split_name,
            "latent_dim": self.d, "kind": "image" if model.images else "vector", "shape": list(model.input_shape),
            "columns": self.columns,
            "units": None if model.images else ("the table's own units" if self.stats is not None else "the data's units"),
            "points": len(self.codes), "labelled": self.labels is not None,
            "classes": self.class_names or None, "by_class": self.by_class, "num_classes": self.classes,
            "order": "KL" if kl is not None else "index",
            "dims": [{"dim": d, "kl": None if kl is None else _round(kl[d], 4), "low": _round(self.low[d]),
                      "high": _round(self.high[d])} for d in self.order],
            "projections": ["pca", "dims"] if self.d > 2 else ["dims"], "proj": self.default_proj,
            "prior": self.prior_source, "methods": list(self.paths), "method": self.method, "steps": self.steps,
            "max_steps": MAX_STEPS,
        }

    def plane(self, proj: Any) -> dict[str, Any]:
        plane = self._plane(proj if proj not in (None, "") else self.default_proj)
        points = plane.coords(self.codes)
        if self.d == 1:  # no second code dimension: spread the points on y (by class when labelled) to see them
            points[:, 1] = self._spread(len(points))
        prior = None
        if self.prior is not None:
            prior = plane.coords(self.prior)
            if self.d == 1:
                prior[:, 1] = torch.linspace(-1, 1, len(prior), dtype=torch.float64)[torch.randperm(len(prior))]
        return {"proj": plane.key, "axes": list(plane.axes), "bounds": _round(plane.bounds),
                "points": _round(points), "labels": None if self.labels is None else self.labels.tolist(),
                "prior": None if prior is None else _round(prior)}

    def decode(self, body: dict[str, Any]) -> dict[str, Any]:
        """{code: [D numbers]} or {index: an example of the split}; with {plane: [x, y], proj} the code moved to
        that point of the plane; y: a class (or "all") for runs that decode by class."""
        _known(body, ("code", "index", "plane", "proj", "y"))
        example = None
        if body.get("index") is not None:
            if body.get("code") is not None:
                raise BadRequest("code: give a code or an index, not both")
            index = self._index(body["index"], "index")
            z, example = self.codes[index].clone(), self._examples([index])
        else:
            z = self._code(body.get("code"))
        plane = None if body.get("proj") is None else self._plane(body["proj"])
        point = None
        if body.get("plane") is not None:
            if plane is None:
                raise BadRequest('plane: a point of the plane needs proj ("pca", or two dimensions such as "0,1")')
            point = self._point(body["plane"], plane)
            z = plane.lift(z, point)
        y = self._class(body.get("y"))
        reply: dict[str, Any] = {"code": _round(z, 7), "decoded": self._payload(self._decode(z[None], y))}
        if plane is not None:
            at = plane.coords(z[None])[0]
            if self.d == 1:
                at[1] = 0.0 if point is None else point[1]
            reply["plane"] = _round(at)
        if example is not None:
            reply["example"] = {"index": example["index"][0], "label": example["labels"][0], "input": example["input"]}
        return reply

    def interpolate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded path from one example's code to another's, `method` (lerp | slerp) as `aelab interpolate`
        draws it; conditional runs decode it with the class y, else with the first example's class."""
        _known(body, ("from", "to", "method", "steps", "y", "proj"))
        a, b = self._index(body.get("from"), "from"), self._index(body.get("to"), "to")
        method = body.get("method", self.method)
        if method not in self.paths:
            raise BadRequest(f"method: unknown method {method!r} ({' or '.join(self.paths)})")
        steps = body.get("steps", self.steps)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
            raise BadRequest(f"steps: {steps!r} is not a whole number of frames (2..{MAX_STEPS})")
        y = self._class(body.get("y"), required=False)
        if self.by_class == "label" and y in (None, "all"):
            y = int(self.labels[a]) if self.labels is not None else 0
        elif self.by_class == "shift":
            y = None  # the path already runs through the code space where the classes are
        t = torch.linspace(0, 1, steps, dtype=torch.float64)
        path = self.paths[method](self.codes[a], self.codes[b], t)  # (steps, D)
        ends = self._examples([a, b])
        reply = {"from": a, "to": b, "method": method, "steps": steps, "y": y, "labels": ends["labels"],
                 "inputs": ends["input"], "frames": self._payload(self._decode(path, y))}
        if body.get("proj") is not None:
            plane = self._plane(body["proj"])
            coords = plane.coords(path)
            if self.d == 1:
                ends_y = self._spread(len(self.codes))[[a, b]]
                coords[:, 1] = (1 - t) * ends_y[0] + t * ends_y[1]
            reply["path"] = _round(coords)
        return reply

    # ---- reading a request --------------------------------------------------------------------
    @property
    def default_proj(self) -> str:
        return "0" if self.d == 1 else ("0,1" if self.d == 2 else "pca")

    def _plane(self, proj: Any) -> Plane:
        if isinstance(proj, list) and len(proj) in (1, 2):
            proj = ",".join(str(p) for p in proj)
        if not isinstance(proj, str):
            raise BadRequest(f'proj: {proj!r} is no projection ("pca", or two code dimensions such as "0,1")')
        key = proj.strip().lower()
        if key in self._planes:
            return self._planes[key]
        if key == "pca":
            if self.d <= 2:
                raise BadRequest(f'proj: PCA needs codes of 3 or more dimensions, these have {self.d} ("{self.default_proj}")')
            plane = self._pca_plane()
        else:
            plane = self._dims_plane(key)
        with self.lock:
            self._planes.setdefault(plane.key, plane)
            self._planes.setdefault(key, plane)
        return plane

    def _dims_plane(self, key: str) -> Plane:
        wanted = 1 if self.d == 1 else 2
        allowed = f'{wanted} code dimension{"s" if wanted > 1 else ""} of 0..{self.d - 1}' + (
            ', or "pca"' if self.d > 2 else "")
        parts = [p.strip() for p in key.split(",")]
        if len(parts) != wanted or not all(p.isdigit() for p in parts):
            raise BadRequest(f"proj: cannot read {key[:40]!r} ({allowed}, e.g. \"{self.default_proj}\")")
        dims = [int(p) for p in parts]
        if any(d >= self.d for d in dims) or len(set(dims)) != len(dims):
            raise BadRequest(f"proj: {key!r} does not name {wanted} different dimensions ({allowed})")
        basis = torch.zeros(self.d, 2, dtype=torch.float64)
        for column, d in enumerate(dims):
            basis[d, column] = 1.0
        names = [self._dim_name(d) for d in dims] + ([] if wanted == 2 else ["(spread for visibility)"])
        bounds = torch.stack([self.low[dims[0]], self.high[dims[0]]])[None]
        second = torch.stack([self.low[dims[1]], self.high[dims[1]]]) if wanted == 2 else torch.tensor(
            [-1.1, 1.1], dtype=torch.float64)
        return Plane(",".join(map(str, dims)), torch.zeros(self.d, dtype=torch.float64), basis, (names[0], names[1]),
                     torch.cat([bounds, second[None]]))

    def _pca_plane(self) -> Plane:
        mean = self.codes.mean(0)
        centred = self.codes - mean
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        basis = vh[:2].T.clone()  # (D, 2)
        for column in range(2):  # a sign that does not depend on the solver: the largest entry positive
            if basis[basis[:, column].abs().argmax(), column] < 0:
                basis[:, column] *= -1
        share = s.square() / s.square().sum().clamp_min(1e-30)
        axes = (f"PC1 ({100 * float(share[0]):.0f}% of the variance)", f"PC2 ({100 * float(share[1]):.0f}%)")
        plane = Plane("pca", mean, basis, axes, torch.zeros(2, 2, dtype=torch.float64))
        shown = plane.coords(self.codes)
        low, high = shown.min(0).values, shown.max(0).values
        if self.prior is not None and len(self.prior) > 1:
            q = torch.quantile(plane.coords(self.prior), torch.tensor([0.005, 0.995], dtype=torch.float64), dim=0)
            low, high = torch.minimum(low, q[0]), torch.maximum(high, q[1])
        low, high = _span(low, high)
        return Plane("pca", mean, basis, axes, torch.stack([low, high], dim=1))

    def _dim_name(self, d: int) -> str:
        return f"z{d}" + ("" if self.kl is None else f" (KL {float(self.kl[d]):.2f})")

    def _spread(self, n: int) -> Tensor:  # (n,): y of 1-D codes on the page, by class when labelled
        g = torch.Generator().manual_seed(0)
        jitter = torch.rand(n, generator=g, dtype=torch.float64) * 0.6 - 0.3
        if self.labels is None or not len(self.class_names):
            return jitter * 3
        k = max(1, len(self.class_names))
        return jitter * (1.6 / k) + (self.labels[:n].double() + 0.5) * (2.0 / k) - 1.0

    def _code(self, value: Any) -> Tensor:
        if value is None:
            raise BadRequest(f"code: missing (a list of {self.d} numbers, or index: an example)")
        if not isinstance(value, list) or len(value) != self.d:
            got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
            raise BadRequest(f"code: {self.d} numbers expected, got {got}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise BadRequest("code: numbers only")
        z = torch.tensor(value, dtype=torch.float64)
        if not torch.isfinite(z).all():
            raise BadRequest("code: NaN or infinite values (finite numbers)")
        low, high = self.limit
        outside = ((z < low) | (z > high)).nonzero()
        if len(outside):
            d = int(outside[0])
            raise BadRequest(f"code: z{d} = {float(z[d]):.4g} is outside the explorable range "
                             f"({float(low[d]):.3g}..{float(high[d]):.3g})")
        return z

    def _point(self, value: Any, plane: Plane) -> Tensor:
        if (not isinstance(value, list) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise BadRequest("plane: a point [x, y] of two numbers expected")
        point = torch.tensor(value, dtype=torch.float64)
        bounds = plane.bounds
        slack = 0.02 * (bounds[:, 1] - bounds[:, 0])  # the page's own rounding at the edges
        if not torch.isfinite(point).all() or ((point < bounds[:, 0] - slack) | (point > bounds[:, 1] + slack)).any():
            (x0, x1), (y0, y1) = bounds.tolist()
            raise BadRequest(f"plane: ({value[0]:.4g}, {value[1]:.4g}) is outside the plane "
                             f"(x {x0:.3g}..{x1:.3g}, y {y0:.3g}..{y1:.3g})")
        return point

    def _index(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.codes):
            raise BadRequest(f"{key}: no example {value!r} (an index 0..{len(self.codes) - 1} of the points)")
        return value

    def _class(self, value: Any, required: bool = True) -> int | str | None:
        if self.by_class is None:
            if value is None:
                return None
            raise BadRequest(f"y: this run ({type(self.model).__name__}) does not decode by class (leave y out)")
        allowed = f'0..{self.classes - 1}, or "all"'
        if value is None:
            if self.by_class == "label" and required:
                raise BadRequest(f"y: this run decodes with a class ({allowed})")
            return None
        if value == "all":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.classes:
            raise BadRequest(f"y: no class {value!r} ({allowed})")
        if self.centres is not None and torch.isnan(self.centres[value]).any():
            raise BadRequest(f"y: no example of class {value} among the points to move the code by",
                             status=422)
        return value

    # ---- decoding -----------------------------------------------------------------------------
    def _decode(self, z: Tensor, y: int | str | None) -> Tensor:
        """Codes (B, D) decoded in data space (B, *shape); y "all": the one code (B = 1) as every class (K, ...)."""
        labels = None
        if y == "all":
            k = self.classes
            if self.by_class == "label":
                z, labels = z.expand(k, -1), torch.arange(k)
            else:
                z = self._shifted(z.expand(k, -1), torch.arange(k))
        elif y is not None:
            if self.by_class == "label":
                labels = torch.full((len(z),), int(y))
            else:
                z = self._shifted(z, torch.full((len(z),), int(y)))
        model = self.model
        with self.lock, torch.no_grad():
            codes = z.to(device=model.device, dtype=self.dtype)
            labels = None if labels is None else labels.to(model.device)
            return model.likelihood.mean(model.decode(codes, labels)).float().cpu()

    def _shifted(self, z: Tensor, to: Tensor) -> Tensor:  # (B, D), (B,) -> (B, D)
        """Each code moved from its nearest class mean to class `to`'s: the same place within another class."""
        centres = self.centres
        known = ~torch.isnan(centres).any(1)
        distance = torch.cdist(z, torch.nan_to_num(centres)).masked_fill(~known[None], float("inf"))  # (B, K)
        return z - centres[distance.argmin(1)] + centres[to]

    def _examples(self, indices: list[int]) -> dict[str, Any]:
        with self.lock:
            batch = self.split.take(indices)
        labels = None if batch.y is None else [int(v) for v in batch.y.tolist()]
        return {"index": indices, "labels": labels or [None] * len(indices), "input": self._payload(batch.x.float().cpu())}

    def _payload(self, x: Tensor) -> dict[str, Any]:
        """Examples (B, *shape) for the page: images as base64 bytes (B, H, W, C), rows as numbers in the table's
        own units (the training statistics undone)."""
        if self.model.images:
            pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
            return {"kind": "image", "shape": list(pixels.shape),
                    "data": base64.b64encode(pixels.numpy().tobytes()).decode("ascii")}
        values = x.double().reshape(len(x), -1)
        if self.stats is not None:
            values = values * self.stats["std"] + self.stats["mean"]
        return {"kind": "vector", "shape": list(values.shape), "rows": _round(values, 6)}


def _known(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field ({', '.join(keys)})")
