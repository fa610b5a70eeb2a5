#!/usr/bin/env python
"""Does JointVAE's discrete code take dSprites' shape? Its mutual information with shape against each continuous dim's.

    python scripts/joint_vae_shape.py                       # train (~10 CPU minutes), then score
    python scripts/joint_vae_shape.py --run <run dir>       # score a trained joint_vae dSprites run
    python scripts/joint_vae_shape.py -- epochs=10          # extra `aelab train` overrides after --
    python scripts/joint_vae_shape.py --dupont model.pt     # score the paper's released dSprites weights

Training is experiment=joint_vae_dsprites on 32x32 dSprites (the preset's settings, its step budget shortened to
what 2 shared cores do in ~10 minutes, the capacity ramp shortened with it). Scoring draws 10,000 factor vectors
uniformly over the grid, renders and encodes them (aelab.metrics.disentanglement.encode_factors), and measures the
plug-in mutual information (nats) of shape (3 values, H = log 3 = 1.099) with
  - the discrete code: the most probable category of the 3-way variable (encode's one-hot, as an index), and
  - each continuous dimension (the posterior mean), cut into 20 equal-width bins as MIG does.
The claim checked: MI(shape; discrete) >= max over continuous dims of MI(shape; dim), and at least MIN_MI = 0.1
nats (a run that learnt nothing has 0 >= 0). It also prints, per factor, the best continuous dim's MI over the
factor's entropy: whether the run learnt anything at all; the 3-way variable's MI with each factor over its
entropy: what the categories took where it was not the shape; and the reconstruction (nats per image) of the codes.
Prints and writes <run>/joint_vae_shape.json.

The run that passes (seeds 0, 2 and 3 of 0-3; about 25 minutes alone on 2 cores, measured below):
    python scripts/joint_vae_shape.py -- data.size=64 trainer.limit_batches=2000 epochs=20 \
        model.capacity_penalty=excess model.capacity_steps=0 model.continuous_capacity=10 model.gamma=100 \
        model.discrete_capacity_steps=20000

The paper's own model: --dupont loads trained_models/dsprites/model.pt of github.com/Schlumberger/joint-vae
(Dupont's released weights: 6 continuous + one 3-way variable, gamma 150, C_z -> 40 and C_c -> 1.1 over 300,000
steps, batches of 64, ~30 epochs of the grid) into experiment=joint_vae_dsprites's model: the nets are the same
layer for layer (tests/test_gumbel.py checks the mapping against his module layout). It reads aelab's rendering
of the grid well (reconstruction 44.4 nats per image; its best dims hold posY 0.56, posX 0.55, scale 0.51 of each
factor's entropy) and measures
  discrete 0.209, best continuous 0.219 (dims: 0.016 0.007 0.007 0.219 0.158 0.187); over the whole grid of
  737,280 images 0.213 against 0.224. Categories x shapes: [[2515, 1317, 3323], [0, 783, 2], [815, 1227, 18]].
So the paper's own model, at its full budget, falls just short of the claim checked here: its 3-way variable
holds as much of the shape as its best continuous dimension, not more, and one category holds most of every shape.

Measured (32 px, threads=1 on 2 cores shared with other jobs, ~2 min per 1,000 steps; MI in nats):
  preset schedule, 9,000 steps (C ramps over 6,000), gamma 150:      discrete 0.000, best continuous 0.082
  4,000 steps, gamma 150, C_c over 500, C_z over 4,000:               discrete 0.000, best continuous 0.026
  4,000 steps, gamma 150, C_z over 500, C_c over 3,000:               discrete 0.000, best continuous 0.030
  4,000 steps, gamma 37.5 (150 x 1024/4096 px), both over 4,000:    discrete 0.000, best continuous 0.045
  4,000 steps, gamma 37.5, C_z over 500, C_c over 3,000:              discrete 0.000, best continuous 0.031
  3,000 steps, gamma 37.5, C_z over 500, C_c over 2,000, hard, tau 1: discrete 0.000, best continuous 0.094
Every arm ended with one confident category for every image (KL_c = log 3 met with no information): the target
is NOT reached at this scale.

Measured at 64 px (the preset; threads=1 per run, two runs at a time on 2 cores, ~15 steps/s each):
  paper settings (gamma 150, C over 22,500), seed 1, stopped at 15,000 steps: discrete 0.000, every continuous 0.000
  paper settings, seed 0, stopped at 22,700 steps:                             discrete 0.000, every continuous 0.000
  paper settings, C over 87,000 of a planned 100,000 steps (a 3.5x shorter ramp than the paper's; 2 threads
  alone, ~28 steps/s), stopped at 26,000 steps (15.6 min):                      discrete 0.000, every continuous 0.000,
                                                    reconstruction 561.8 nats per image (the mean image)
  model.capacity_penalty=excess (gamma * max(0, KL - C): no push up to C), C_z 10 nats from step 0, gamma 100,
  40,000 steps (24 min):                              discrete 0.387 (categories [[3330, 716, 3312], [0, 1254, 17],
                                                    [0, 1357, 14]]), best continuous 0.489 (0.9 nats of KL: shape)
  the same, seed 1 (22 min):                          discrete 0.000 (50/50 whatever the shape), best continuous 0.034
  the same with 3 continuous dims (latent_dim=6):    discrete 0.011 (40/60 whatever the shape), best continuous 0.050
  the excess run, C_z 8 nats, seeds 0 / 1 (36 min each, threads=1, two at a time): discrete 0.031 / 0.038, best
                                                    continuous 0.126 / 0.209; the categories took scale / posX
                                                    (discrete_by_factor: scale 0.115, posX 0.049 / posX 0.082)
  C_z 10 nats as above, C_c ramped over the first 20,000 steps (model.discrete_capacity_steps=20000), 40,000 steps,
  36 min each (threads=1, two at a time):
    seed 0: discrete 0.334, best continuous 0.218  PASS (categories [[0, 1238, 22], [0, 1119, 3], [3330, 970, 3318]])
    seed 1: discrete 0.029, best continuous 0.109  (the categories took posX 0.058 and scale 0.098 of their entropies)
    seed 2: discrete 0.316, best continuous 0.112  PASS (categories [[0, 1194, 58], [3330, 998, 3276], [0, 1135, 9]])
    seed 3: discrete 0.291, best continuous 0.113  PASS (categories [[2, 1228, 89], [3328, 1108, 3253], [0, 991, 1]])
  so with C_c opened after the continuous code has learnt position and scale, what the categories can still gain is
  the shape: in the three seeds that pass, two categories hold only ellipses and the third everything else.
  gamma 10, C over 13,500, seed 0, 18,000 steps:    discrete 0.000, best continuous 0.112 (posY 0.31, posX 0.24,
                                                    scale 0.14, shape 0.10 of each factor's entropy)
  gamma 30, C over 12,000, seed 0, 16,000 steps:    discrete 0.000 (one category), best continuous 0.047
  gamma 10, C_z over 12,000, C_c over 4,000, 16,000 steps: discrete 0.040 (categories lean square / heart:
                                                    [[2256, 1650, 1115], [1074, 1677, 2228]]), best continuous 0.285
  the same, C_c capped at 0.7 nats (never one-hot):  discrete 0.058 (at 10,000 steps 0.063; one category nearly
                                                    without hearts: [1110, 710, 108]), best continuous 0.258
  the same as the 0.040 run, C_z capped at 15 nats:  discrete 0.008 (one category), best continuous 0.365
  the same as the 0.040 run, model.hard=true (straight-through one-hots), 16,000 steps, 2 threads alone (30
  steps/s, 9.6 min): discrete 0.000 (categories 87/13 whatever the shape), best continuous 0.273
At gamma 150 the runs learnt nothing at all: each continuous mean is the same for every image (std 0.000) and
sigma ~0.03-0.09, so KL_z meets C_z (26.7 and 39.9 nats) by constant offsets that carry no information; the
decoder, fed a constant, draws the mean image and never starts to read the code. With gamma 10 the continuous code
learns position and scale, but the 3-way variable splits the images 71/29 between two categories whatever their
shape. The loss maths match Dupont's code (batch-mean KLs summed over dims/variables, recon
summed over pixels and averaged over the batch, the Gumbel-softmax of log alpha = the softmax of the logits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TRAIN = ["experiment=joint_vae_dsprites", "data.size=32", "epochs=6", "trainer.limit_batches=1500",
         "model.capacity_steps=6000", "logger=none", "device=cpu"]
POINTS, BINS = 10_000, 20
MIN_MI = 0.1  # nats (a tenth of H(shape)): below it the discrete code has not taken the shape, whatever the rest holds


def score(model, data, label: str) -> dict[str, object]:
    """The measurement above for a joint_vae `model` on dSprites `data` (a DataModule with factors)."""
    import torch

    from aelab.metrics.disentanglement import _histogram_bins, _mutual_information, encode_factors, sample_factors

    model = model.eval()
    sizes, names = data.factors.sizes, list(data.factors.names)
    factors = sample_factors(sizes, POINTS, np.random.default_rng(0))
    with torch.no_grad():
        codes = encode_factors(model.encode, data, factors)  # (N, C + 3): means, then the one-hot
    shape = factors[:, names.index("shape")]
    c = model.continuous
    discrete = codes[:, c : c + model.sizes[0]].argmax(1)
    binned = _histogram_bins(codes[:, :c], BINS)  # each continuous dim in 20 equal-width bins (per dim, as MIG)
    continuous = [_mutual_information(binned[:, d], shape) for d in range(c)]
    table = np.zeros((model.sizes[0], sizes[names.index("shape")]), dtype=int)  # category x shape counts
    np.add.at(table, (discrete, shape), 1)
    out = {"run": label, "points": POINTS, "entropy_shape": float(np.log(3)),
           "mi_shape_discrete": _mutual_information(discrete, shape),
           "mi_shape_continuous": continuous, "best_continuous_dim": int(np.argmax(continuous)) if c else None,
           "category_by_shape": table.tolist()}
    # per factor, MI normalised by the factor's entropy: what the continuous code learnt at all (its best dim; a run
    # that learnt nothing has 0 everywhere, and then "the discrete code >= every continuous dim" means nothing), and
    # what the discrete code holds (where it has not taken the shape, what it took instead)
    out["continuous_by_factor"], out["discrete_by_factor"] = {}, {}
    for f, name in enumerate(names):
        values = factors[:, f]
        entropy = float(np.log(sizes[f]))
        best = max((_mutual_information(binned[:, d], values) for d in range(c)), default=0.0)
        out["continuous_by_factor"][name] = round(best / entropy, 3)
        out["discrete_by_factor"][name] = round(_mutual_information(discrete, values) / entropy, 3)
    with torch.no_grad():  # the reconstruction of the codes (means, most probable category): does the net read them
        x = data.factors.render(torch.from_numpy(factors[:1000]))
        out["recon_nats"] = float(model.likelihood.nll(model.decode(model.encode(x)), x).mean())
    out["discrete_wins"] = (out["mi_shape_discrete"] >= max(continuous, default=0.0)
                            and out["mi_shape_discrete"] >= MIN_MI)
    return out


# aelab's joint_vae on arch=burgess_conv <- Dupont's VAE (jointvae/models.py of github.com/Schlumberger/joint-vae),
# layer by layer: the same convs, FC 256 and transposed convs. Dupont's three heads (means, log-variances, the
# logits of each categorical variable) are rows of aelab's one head, in that order.
DUPONT_LAYERS = {
    **{f"encoder.features.{i}": f"img_to_features.{i}" for i in (0, 2, 4, 6)},
    "encoder.hidden.0": "features_to_hidden.0",
    "decoder.project.0": "latent_to_features.0", "decoder.project.2": "latent_to_features.2",
    **{f"decoder.net.{i}": f"features_to_img.{i}" for i in (0, 2, 4, 6)},
}


def from_dupont(reference: dict) -> dict:
    """A state dict of Dupont's JointVAE (64 px, continuous and discrete parts) -> aelab joint_vae's (no buffers)."""
    import torch

    heads = ["fc_mean", "fc_log_var", *sorted({k.rsplit(".", 1)[0] for k in reference if k.startswith("fc_alphas.")},
                                               key=lambda name: int(name.split(".")[1]))]
    out = {}
    for ours, theirs in DUPONT_LAYERS.items():
        for part in ("weight", "bias"):
            out[f"{ours}.{part}"] = reference[f"{theirs}.{part}"]
    for part in ("weight", "bias"):
        out[f"encoder.head.{part}"] = torch.cat([reference[f"{head}.{part}"] for head in heads])
    return out


def dupont_model(path: Path):
    """experiment=joint_vae_dsprites's model (6 continuous + one 3-way) holding the weights of Dupont's released
    dSprites model (trained_models/dsprites/model.pt: his 300,000-step schedule, ~345,000 steps), and the data."""
    import torch

    from aelab.api import compose_train
    from aelab.data import build_data
    from aelab.engine.build import build_model

    cfg, _ = compose_train(["experiment=joint_vae_dsprites", "data.subsample=1000", "logger=none", "device=cpu"])
    data = build_data(cfg.data, torch.device("cpu"))  # the factors' renderer; 1,000 images, quick to build
    model = build_model(cfg, data.shape, data.num_classes)
    missing, unexpected = model.load_state_dict(from_dupont(torch.load(path, map_location="cpu")), strict=False)
    assert not unexpected and missing == ["last_step"], (missing, unexpected)
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="score this trained run instead of training one")
    source.add_argument("--dupont", type=Path, metavar="MODEL_PT",
                        help="score Dupont's released weights (joint-vae's trained_models/dsprites/model.pt)")
    parser.add_argument("overrides", nargs="*", help="extra aelab train overrides")
    args = parser.parse_args()
    if args.dupont is not None:
        if not args.dupont.is_file():
            sys.exit(f"error: --dupont: no file {args.dupont} (trained_models/dsprites/model.pt of "
                     "github.com/Schlumberger/joint-vae)")
        result = score(*dupont_model(args.dupont), label=f"dupont:{args.dupont}")
        out = Path("outputs/joint-vae-shape/dupont.json")
    else:
        import aelab

        run = args.run
        if run is None:
            start = time.time()
            run = Path("outputs/joint-vae-shape") / time.strftime("%Y-%m-%d_%H-%M-%S")
            aelab.train([*TRAIN, *args.overrides, f"hydra.run.dir={run}"])
            print(f"trained in {time.time() - start:.0f} s: {run}", flush=True)
        loaded = aelab.load_run(run)
        result = score(loaded.model, loaded.data, label=str(run))
        out = run / "joint_vae_shape.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    mi_c = result["mi_shape_continuous"]
    print(f"MI(shape; discrete code) = {result['mi_shape_discrete']:.3f} nats of H(shape) = log 3 = 1.099")
    print("MI(shape; continuous dim d) = " + ", ".join(f"{d}: {v:.3f}" for d, v in enumerate(mi_c)))
    print(f"category x shape counts (rows: category; columns: square, ellipse, heart): {result['category_by_shape']}")
    print("best continuous dim's MI with each factor / its entropy:", result["continuous_by_factor"])
    print("the discrete code's MI with each factor / its entropy:", result["discrete_by_factor"])
    print(f"reconstruction of the codes: {result['recon_nats']:.1f} nats per image")
    print(f"discrete code >= every continuous dim and >= {MIN_MI} nats:", result["discrete_wins"])
    sys.exit(0)


if __name__ == "__main__":
    main()
