"""Objects from config nodes via `_target_`, with constructor mistakes reported as user errors.

Below engine, data and models alike (data sources are built from config too), so none of them imports upward.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from aelab.errors import UserError, WriteError


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs); a UserError or WriteError (a full disk) raised inside passes through, other
    failures name `key`."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, (UserError, WriteError)) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (UserError, WriteError)):
            raise cause from None
        detail = str(cause if cause is not None else exc).strip().splitlines()
        raise UserError(key, detail[0] if detail else "cannot be built", f"check {key}.* in the config") from None
