"""aelab: a config-driven toolkit for training and exploring autoencoders.

`aelab.load_run(path)` and `aelab.train(overrides)` (aelab/api.py) are imported on first use: `import aelab`
and `aelab --help` stay free of torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_run", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load_run", "train", "Run", "TrainResult"):
        from aelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")
