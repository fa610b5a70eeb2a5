"""`aelab export run=<dir> format=torchscript|onnx`: the encoder and the decoder as standalone files.

encoder: x (N, *input_shape) as the model reads it (pixels in [0, 1]; table rows standardised) -> codes (N, D), the
same numbers `aelab encode` writes; decoder: codes (N, D) -> the mean reconstruction (N, *input_shape). Conditional
families take the class labels (N,) int64 as a second input. Beside them: export.json (shapes, the table statistics
to standardise raw rows with) and load.py, which runs them with torch and numpy alone. Each file is checked against
the model on a batch of another size before the command reports success.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.results import print_results
from aelab.commands.session import open_run
from aelab.config_check import check_export
from aelab.errors import UserError
from aelab.files import write_bytes

TRACE_BATCH, CHECK_BATCH = 2, 5  # traced on one batch size, checked on another: the batch dimension stays free
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}  # max |exported - model|; ONNX's reference runtime sums in its own order

LOADER = '''"""Encode and decode with an exported aelab run, without aelab (torch and numpy only).

    python load.py <export folder> <examples.npy> <codes.npy>

examples.npy: raw examples (N, *input_shape): uint8 pixels, or a table's rows in its own units.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

folder, examples, codes = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
meta = json.loads((folder / "export.json").read_text())
encoder = torch.jit.load(str(folder / "encoder.pt"))
decoder = torch.jit.load(str(folder / "decoder.pt"))

raw = np.load(examples)
stats = meta["standardization"]
if stats:  # a table: scaled with the training split's statistics, as the run was trained
    x = torch.from_numpy((raw.astype(np.float64) - np.array(stats["mean"])) / np.array(stats["std"])).float()
elif raw.dtype == np.uint8:  # pixels -> [0, 1]
    x = torch.from_numpy(raw).float() / 255.0
else:
    x = torch.from_numpy(raw).float()
with torch.no_grad():
    z = encoder(x)  # (N, latent_dim): what `aelab encode` writes to codes.npy (conditional runs: encoder(x, y))
    x_hat = decoder(z)  # (N, *input_shape): the mean reconstruction (conditional runs: decoder(z, y))
np.save(codes, z.numpy())
print(f"codes {tuple(z.shape)}, reconstructions {tuple(x_hat.shape)}")
'''


def wrappers(model):
    """Encoder and decoder as plain modules of tensors (labels as a second input for conditional families)."""
    from torch import nn

    conditional = model.conditional

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, y=None):  # (N, *input_shape) [, (N,)] -> (N, D)
            return self.model.encode(x, y if conditional else None)

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, z, y=None):  # (N, D) [, (N,)] -> (N, *input_shape) mean reconstruction
            return self.model.likelihood.mean(self.model.decode(z, y if conditional else None))

    return Encoder().eval(), Decoder().eval()


def example_inputs(model, n: int, seed: int):
    """Inputs in the model's range: pixels in [0, 1] for images, standard normal rows for tables; cycling labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (n, *model.input_shape)
    x = torch.rand(shape, generator=g) if model.images else torch.randn(shape, generator=g)
    y = torch.arange(n) % int(model.num_classes) if model.conditional else None
    with torch.no_grad():
        z = model.encode(x, y)
    return x, y, z


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from aelab.commands._apply import run_standardization

    check_export(cfg)
    fmt = str(cfg.format)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("format", "onnx is not installed", "pip install 'aelab[onnx]', or format=torchscript") from None
    with open_run(cfg, "export") as session:
        model = session.model.cpu().eval()  # portable files: exported from the CPU copy
        stats = run_standardization(session)
        encoder, decoder = wrappers(model)
        out = session.out
        trace_x, trace_y, trace_z = example_inputs(model, TRACE_BATCH, seed=1)
        check_x, check_y, check_z = example_inputs(model, CHECK_BATCH, seed=2)
        labels = () if trace_y is None else (trace_y,)
        check_labels = () if check_y is None else (check_y,)
        with torch.no_grad():
            expected = {"encoder": check_z, "decoder": decoder(check_z, *check_labels)}
        save = _torchscript if fmt == "torchscript" else _onnx
        diffs = {}
        for name, module, args, check in (("encoder", encoder, (trace_x, *labels), (check_x, *check_labels)),
                                          ("decoder", decoder, (trace_z, *labels), (check_z, *check_labels))):
            path, got = save(module, args, check, out.dir / name, name)
            diffs[name] = float((got - expected[name]).abs().max())
            if not diffs[name] <= TOLERANCE[fmt]:
                raise UserError("format", f"the exported {name} differs from the model by {diffs[name]:.3g}",
                                f"{type(session.model).__name__} does not export faithfully to {fmt}")
            out.files[name] = path.name
        meta = {"format": fmt, "family": type(model).__name__, "input_shape": list(model.input_shape),
                "latent_dim": int(model.latent_dim), "conditional": bool(model.conditional),
                "num_classes": model.num_classes, "likelihood": type(model.likelihood).__name__,
                "decoder_output": "the mean reconstruction in data space (pixels in [0, 1]; standardised table rows)",
                "input": "pixels in [0, 1]" if model.images else "table rows standardised with `standardization`",
                "standardization": stats, "files": dict(out.files), "max_abs_diff": diffs,
                "run": str(session.run.run_dir), "ckpt": str(cfg.get("ckpt", "last"))}
        write_bytes(out.dir / "export.json", (json.dumps(meta, indent=2) + "\n").encode(), "export description")
        out.files["meta"] = "export.json"
        if fmt == "torchscript":
            write_bytes(out.dir / "load.py", LOADER.encode(), "loader script")
            out.files["loader"] = "load.py"
        info = {"format": fmt, **{f"max_abs_diff_{k}": v for k, v in diffs.items()}}
        out.metrics(info)
        files = dict(out.files)
    print_results(f"export: {type(model).__name__} as {fmt}", {**files, **info}, out.dir)
    return {**files, **info, "output_dir": str(out.dir)}


def _torchscript(module, args: tuple, check: tuple, stem: Path, name: str):
    """A traced TorchScript file, reloaded and run on the check batch."""
    import torch

    path = stem.with_suffix(".pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; its files still load
        traced = torch.jit.trace(module, args, check_trace=False)
        buffer = io.BytesIO()  # in memory first: torch's file writer would hide a full disk in a RuntimeError
        torch.jit.save(traced, buffer)
        write_bytes(path, buffer.getbuffer(), f"exported {name}")
        return path, torch.jit.load(str(path))(*check)


def _onnx(module, args: tuple, check: tuple, stem: Path, name: str):
    """An ONNX file (the TorchScript-based exporter: no onnxscript needed), run by onnx's reference runtime."""
    import numpy as np
    import onnx
    import torch
    from onnx.reference import ReferenceEvaluator

    path = stem.with_suffix(".onnx")
    inputs = ["x" if name == "encoder" else "z"] + (["y"] if len(args) > 1 else [])
    output = "z" if name == "encoder" else "x_hat"
    axes = {k: {0: "batch"} for k in [*inputs, output]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=inputs, output_names=[output],
                          dynamic_axes=axes, opset_version=17)
    write_bytes(path, buffer.getbuffer(), f"exported {name}")
    onnx.checker.check_model(onnx.load(str(path)))
    feeds = {k: v.numpy() for k, v in zip(inputs, check)}
    got = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    return path, torch.from_numpy(np.asarray(got, dtype=np.float32))


main = hydra_entry(run)
