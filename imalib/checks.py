"""Generic type checks for parameters that arrive as loose values (notebook and method parameters).

Papermill injects a notebook's parameters as plain Python literals, and the
command line passes method parameters as ``KEY=VALUE`` strings. Neither path
checks types, so a ``seed: "1"`` or ``beta=abc`` would only fail deep inside a
run (or, worse, silently change what is run). The checks here fail early,
with a :class:`~imalib.config.ConfigError` that names the parameter, the type
of the value given and the type (or values) expected.

A *spec* describes what one parameter may hold. It is one of

* a class (``int``, ``str``, ``float``, ...): ``isinstance`` with two
  refinements: ``bool`` never counts as ``int`` / ``float``, and an ``int``
  is accepted (and converted) where a ``float`` is expected;
* ``None`` (or ``type(None)``): the value must be ``None``;
* a parametrised container such as ``list[str]``, ``tuple[float, ...]`` or
  ``dict[str, int]``: the container type and every element are checked;
* ``typing.Literal[...]``, a union (``int | None``, ``Optional[int]``) or
  ``typing.Any``;
* a plain ``tuple`` of alternatives: each item is either a spec from this list
  or a literal value the parameter may equal, so ``("smoke", "cpu", "paper")``
  is a choice of strings and ``(list[str], None)`` a list of strings or None.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from imalib.config import PROFILES
from imalib.errors import ConfigError

# The parameters shared by the book's notebooks (the papermill "parameters" cell).
NOTEBOOK_SPEC: dict[str, Any] = {
    "profile": PROFILES,
    "seed": int,
    "seeds": list[int],
    "methods": (list[str], None),
    "device": str,
    "noise": float,
    "noise_levels": list[float],
    "train_missing": bool,
    "results_root": str,
    "data_root": (str, None),
    "workers": int,
    "data_params": (dict, None),
}


def _is_spec(item: Any) -> bool:
    """Whether ``item`` describes a type (rather than being a literal allowed value)."""
    if item is None or isinstance(item, type) or item is Any:
        return True
    return typing.get_origin(item) is not None


def _matches(value: Any, spec: Any) -> bool:
    """True when ``value`` satisfies ``spec`` (see the module docstring)."""
    if spec is Any:
        return True
    if spec is None or spec is type(None):
        return value is None
    if isinstance(spec, tuple):
        return any(_matches(value, item) if _is_spec(item) else _same_value(value, item) for item in spec)
    origin = typing.get_origin(spec)
    if origin is None and isinstance(spec, type):
        if isinstance(value, bool) and spec is not bool and spec is not object:
            return False
        if spec is float:
            return isinstance(value, (int, float))
        return isinstance(value, spec)
    args = typing.get_args(spec)
    if origin is Literal:
        return any(_same_value(value, choice) for choice in args)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in args)
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        if not args:
            return True
        return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(origin, type):
        return isinstance(value, origin)
    raise TypeError(f"cannot check against the spec {spec!r}")


def _same_value(value: Any, choice: Any) -> bool:
    """Equality that does not confuse True with 1 or 1 with 1.0 across types."""
    return type(value) is type(choice) and value == choice


def describe(spec: Any) -> str:
    """A short human-readable name for ``spec``, used in error messages."""
    if spec is Any:
        return "any value"
    if spec is None or spec is type(None):
        return "None"
    if isinstance(spec, tuple):
        types_ = [describe(item) for item in spec if _is_spec(item)]
        values = [repr(item) for item in spec if not _is_spec(item)]
        parts = types_ + ([f"one of {', '.join(values)}"] if values else [])
        return " or ".join(parts)
    origin = typing.get_origin(spec)
    if origin is None and isinstance(spec, type):
        return spec.__name__
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(spec))
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(describe(arg) for arg in typing.get_args(spec))
    args = typing.get_args(spec)
    name = getattr(origin, "__name__", str(origin))
    if not args:
        return name
    inner = ", ".join("..." if arg is Ellipsis else describe(arg) for arg in args)
    return f"{name}[{inner}]"


def _normalise(value: Any, spec: Any) -> Any:
    """Turn an ``int`` into a ``float`` where the spec asks for a float (and not for an int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if spec is float:
            return float(value)
        if (
            typing.get_origin(spec) in (typing.Union, types.UnionType)
            and float in typing.get_args(spec)
            and int not in typing.get_args(spec)
        ):
            return float(value)
    return value


def check_value(owner: str, name: str, value: Any, spec: Any) -> Any:
    """``value`` (ints turned into floats where a float is expected), or a ConfigError naming the mismatch."""
    if not _matches(value, spec):
        raise ConfigError(f"{owner} {name}={value!r} has type {type(value).__name__}; expected {describe(spec)}")
    return _normalise(value, spec)


def check_notebook_params(params: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a notebook's parameters against ``spec`` (default :data:`NOTEBOOK_SPEC`).

    Every key of ``params`` must appear in ``spec`` (an unknown key is usually a
    typo in a papermill ``-p`` option); keys of ``spec`` missing from ``params``
    are allowed (the notebook keeps its default). Returns a new dict, with ints
    turned into floats where a float is expected. Raises :class:`ConfigError`
    naming the parameter, its value, the value's type and the expected type.
    """
    spec = NOTEBOOK_SPEC if spec is None else spec
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(spec)}")
    return {name: check_value("notebook parameter", name, value, spec[name]) for name, value in params.items()}


__all__ = ["NOTEBOOK_SPEC", "check_notebook_params", "check_value", "describe"]
