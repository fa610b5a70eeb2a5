"""Config schemas read from signatures: a family's (or arch's, or data source's) constructor is its schema.

Hyperparameters live in one place, the `_target_`'s signature. Each annotated parameter says its type
and, through `typing.Annotated`, its range or allowed values::

    def __init__(self, ..., rho: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.05,
                 penalty: Annotated[str, OneOf(PENALTIES)] = "l1") -> None:

and a class may add rules across keys as ``@classmethod check_options(cls, options: dict, key: str)``
(raising UserError); a function target (a data source) carries the same rule as its `check_options` attribute. `check_target` checks a config node against that before anything is built, so a
new family is its module plus its YAML and nothing else knows its keys. No torch import here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from aelab.errors import UserError

__all__ = ["Annotated", "Literal", "Range", "OneOf", "check_value", "check_target", "check_against", "resolve_target",
           "describe"]


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either end may be open or absent)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values; pass the module-level tuple the code itself uses."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        # a dict of implementations (LIKELIHOODS, CORRUPTIONS) is its own list of names: its keys
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "one of: " + ", ".join(str(v) for v in self.values)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _split(annotation: Any) -> tuple[Any, list[Any]]:
    """Annotated[T, meta...] -> (T, [meta...]); anything else -> (annotation, [])."""
    if typing.get_origin(annotation) is Annotated:
        base, *meta = typing.get_args(annotation)
        return base, list(meta)
    return annotation, []


def _union_args(t: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(t) in (Union, types.UnionType):
        return typing.get_args(t)
    return None


def describe(annotation: Any) -> str:
    """What a value of this annotation must be, in words."""
    base, meta = _split(annotation)
    words = _type_words(base)
    for m in meta:
        if isinstance(m, OneOf):
            return m.describe() + (" or null" if _nullable(base) else "")
        if isinstance(m, Range) and m.describe():
            words += " " + m.describe()
    return words


def _nullable(t: Any) -> bool:
    args = _union_args(t)
    return args is not None and type(None) in args


def _type_words(t: Any) -> str:
    args = _union_args(t)
    if args is not None:
        inner = [a for a in args if a is not type(None)]
        words = " or ".join(_type_words(a) for a in inner)
        return words + (" or null" if len(inner) < len(args) else "")
    origin = typing.get_origin(t)
    if origin is Literal:
        return " or ".join(str(v) for v in typing.get_args(t))
    if origin in (list, tuple, Sequence, typing.Sequence) or t in (list, tuple):
        item = (typing.get_args(t) or (Any,))[0]
        return f"a list of {_type_words(item).removeprefix('a ').removeprefix('an ')}s" if item is not Any else "a list"
    if inspect.isclass(t) and t not in (int, float, bool, str):
        return f"a {t.__name__}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(t, "a value")


def _matches(value: Any, t: Any) -> bool:
    """Whether value has type t (ints count as floats; unknown annotations accept anything)."""
    args = _union_args(t)
    if args is not None:
        return any(_matches(value, a) for a in args)
    if t is type(None):
        return value is None
    if t is Any or t is inspect.Parameter.empty:
        return True
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return _is_int(value)
    if t is float:
        return _is_number(value)
    if t is str:
        return isinstance(value, str)
    origin = typing.get_origin(t)
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(t))
    if origin in (list, tuple, Sequence, typing.Sequence) or t in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item_args = typing.get_args(t)
        if not item_args or (origin is tuple and len(item_args) == 2 and item_args[1] is Ellipsis):
            item = item_args[0] if item_args else Any
            return all(_matches(v, item) for v in value)
        if origin is tuple:
            return len(item_args) == len(value) and all(_matches(v, a) for v, a in zip(value, item_args))
        return all(_matches(v, item_args[0]) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or t is dict:
        return isinstance(value, Mapping)
    return _matches_class(value, t)


def _matches_class(value: Any, t: Any) -> bool:
    """A config value (str, number, bool, list, dict) given for an argument annotated with a class."""
    if not inspect.isclass(t) or getattr(t, "_is_protocol", False):
        return True  # a callable, a protocol, a type variable: nothing a config value can be checked against
    if isinstance(value, Mapping) and "_target_" in value:
        return True  # a nested node Hydra instantiates into the object
    if issubclass(t, os.PathLike) and isinstance(value, str):
        return True  # a path given as a string
    return isinstance(value, t)


def check_value(key: str, value: Any, annotation: Any) -> None:
    """Raise a one-line UserError if value does not fit annotation (type, range, choices)."""
    if annotation is inspect.Parameter.empty:
        return
    base, meta = _split(annotation)
    for m in meta:
        if isinstance(m, OneOf):
            if value is None and _nullable(base):
                return
            if not any(value == v and type(value) is type(v) for v in m.values):  # 1.0 is not the choice 1
                raise UserError(key, f"unknown value {value!r}", describe(annotation))
            return
    if not _matches(value, base):
        raise UserError(key, f"expected {_type_words(base)}, got {value!r}", describe(annotation))
    for m in meta:
        if isinstance(m, Range):
            items = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in items if _is_number(v) and not m.contains(v)]
            if bad:
                raise UserError(key, f"out of range: {bad[0]!r}", describe(annotation))


def resolve_target(path: str, key: str) -> Callable[..., Any]:
    """The object a `_target_` names (module.attr[.attr])."""
    for split in range(path.count("."), 0, -1):
        module_name, attrs = ".".join(path.split(".")[:split]), path.split(".")[split:]
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for a in attrs:
                obj = getattr(obj, a)
        except AttributeError:
            break
        return obj
    raise UserError(f"{key}._target_", f"cannot import {path!r}", "a module.Class that exists")


@functools.lru_cache(maxsize=None)
def signature_of(target: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters, resolved annotations, takes **kwargs) of a class's __init__ or a function."""
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}, {}, True
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation we cannot resolve: check nothing rather than guess
        hints = {}
    params.pop("self", None)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    params = {n: p for n, p in params.items()
              if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    return params, hints, var_kw


def check_target(node: Mapping[str, Any], key: str, provided: Sequence[str] = ()) -> dict[str, Any]:
    """Check a resolved config node with a `_target_` against that target's signature.

    `provided` names arguments the builder passes itself (arch, input_shape, ...): a config key of that name
    is refused. Returns the options the target will get (config values over the signature's defaults).
    """
    return check_against(resolve_target(str(node["_target_"]), key), node, key, provided)


def _settable(annotation: Any) -> bool:
    """Whether a config value can be given for a parameter (not an object the code builds, e.g. a Condition)."""
    base, _ = _split(annotation)
    args = [a for a in (_union_args(base) or (base,)) if a is not type(None)]
    return not all(inspect.isclass(a) and typing.get_origin(a) is None and a not in (int, float, bool, str, list, tuple,
                                                                                   dict) for a in args)


def check_against(target: Callable[..., Any], node: Mapping[str, Any], key: str,
                  provided: Sequence[str] = ()) -> dict[str, Any]:
    """Check the keys of node (`_target_`-style keys aside) against target's signature and its check_options."""
    params, hints, var_kw = signature_of(target)
    options: dict[str, Any] = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    for name, value in node.items():
        if str(name).startswith("_") and str(name).endswith("_"):
            continue
        full = f"{key}.{name}"
        if name not in params or name in provided:
            if var_kw and name not in provided:
                options[name] = value
                continue
            allowed = [n for n in params if n not in provided and _settable(hints.get(n, Any))]
            raise UserError(full, "unknown key", "keys: " + ", ".join(allowed) if allowed else f"{key} takes no keys")
        check_value(full, value, hints.get(name, params[name].annotation if not isinstance(
            params[name].annotation, str) else inspect.Parameter.empty))
        options[name] = value
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in options
               and n not in provided and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if missing and not node.get("_partial_", False):
        raise UserError(f"{key}.{missing[0]}", "missing", describe(hints.get(missing[0], inspect.Parameter.empty)))
    rule = getattr(target, "check_options", None)
    if callable(rule):
        rule(options, key)
    return options


# ---- the top-level knobs families share -------------------------------------------------------------
SHARED_KEYS = ("latent_dim", "beta", "noise")  # train.yaml's knobs that a family reads through its YAML


def shared_keys_read(model_node: Any) -> set[str]:
    """The shared knobs a family reads: those its YAML interpolates (`beta: ${beta}`). The YAML is the one
    declaration: a family that has no `${beta}` ignores `beta`, and setting it is refused rather than a no-op."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(model_node, resolve=False) if not isinstance(model_node, str) else model_node
    return {key for key in SHARED_KEYS if "${" + key + "}" in text}
