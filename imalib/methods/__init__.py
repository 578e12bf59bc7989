"""Training methods: one module per method, the registry, and the one way to build a method.

A method is a frozen dataclass (see :mod:`imalib.methods.base`). What it takes
is read from its fields: a field ``eps`` means it trains at a noise level
(``eps > 0``), a field ``norm`` that it works in that norm (its type says which
norms), and every other field except ``name`` is a parameter that ``--param``
(or ``RunConfig.method_params``) may set, with the field's type. Adding a
method is its module, one line in :data:`METHODS` and its test.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from imalib.checks import check_value
from imalib.errors import ConfigError

if TYPE_CHECKING:
    from imalib.methods.base import Method

# The registry, in the order the paper's tables list the methods: name -> "module:class", or the class itself.
# Entries are imported on first use, so that the names are known without importing torch (the CLI's --help).
METHODS: dict[str, str | type] = {
    "ima": "imalib.methods.ima:IMA",
    "mma": "imalib.methods.mma:MMA",
    "trades": "imalib.methods.trades:Trades",
    "adv": "imalib.methods.adv_eps:AdvEps",
    "rand": "imalib.methods.rand_eps:RandEps",
    "ddn": "imalib.methods.ddn:DDN",
    "ce": "imalib.methods.ce:CE",
}

# The public names of this package that live in its modules (imported on first access).
_LAZY = {
    "AdvEps": "adv_eps",
    "CE": "ce",
    "DDN": "ddn",
    "IMA": "ima",
    "MMA": "mma",
    "RandEps": "rand_eps",
    "Trades": "trades",
    "BatchContext": "base",
    "Method": "base",
    "MethodState": "base",
    "StepOutput": "base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"imalib.methods.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'imalib.methods' has no attribute {name!r}")


# Method fields that come from the run configuration, not from method parameters.
_CONFIG_FIELDS = {"eps": "--eps / RunConfig.eps", "norm": "--norm / RunConfig.norm", "name": "the method name"}


def method_class(name: str) -> type:
    """The registered class of method ``name``, or a ConfigError listing the methods."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not supported: use one of {', '.join(METHODS)}")
    entry = METHODS[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
    if not (isinstance(entry, type) and dataclasses.is_dataclass(entry)):
        raise TypeError(f"the registry entry of method {name!r} is not a dataclass: {entry!r}")
    return entry


def _fields(name: str) -> dict[str, Any]:
    cls = method_class(name)
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def takes_eps(name: str) -> bool:
    """Whether method ``name`` trains at a noise level (it has an ``eps`` field)."""
    return "eps" in _fields(name)


def method_param_spec(name: str) -> dict[str, Any]:
    """The parameters ``--param`` may set for method ``name``, with the type each must have."""
    return {key: spec for key, spec in _fields(name).items() if key not in _CONFIG_FIELDS}


def check_method_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate extra parameters for method ``name`` (names and types) before any work starts.

    The allowed names and types are read from the method's dataclass fields;
    ``eps``, ``norm`` and ``name`` are refused because the run configuration
    sets them. Range checks (e.g. beta in [0, 1]) stay with the method itself.
    """
    spec = method_param_spec(name)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _CONFIG_FIELDS:
            raise ConfigError(f"{key!r} is not a method parameter of {name!r}: it is set by {_CONFIG_FIELDS[key]}")
        if key not in spec:
            allowed = ", ".join(sorted(spec)) or "none"
            raise ConfigError(f"unknown parameter {key!r} for method {name!r}; allowed: {allowed}")
        out[key] = check_value(f"method {name!r} parameter", key, value, spec[key])
    return out


def build_method(name: str, *, eps: float, norm: str, params: Mapping[str, Any] | None = None) -> Method:
    """Instantiate method ``name`` at noise level ``eps`` in ``norm`` with extra ``params``; checks all four.

    This is the one place where a method name, its eps, its norm and its
    parameters are checked (the command line, ``run_experiment`` and the
    notebooks all come through here). Every failure is a :class:`ConfigError`.
    """
    fields = _fields(name)
    kwargs: dict[str, Any] = dict(check_method_params(name, params or {}))
    if "eps" in fields:
        if not eps > 0:
            raise ConfigError(f"eps={eps!r}: method {name!r} needs eps > 0")
        kwargs["eps"] = eps
    elif eps != 0:
        raise ConfigError(f"eps={eps!r}: method {name!r} trains without noise, so its eps must be 0 (leave --eps out)")
    if "norm" in fields:
        allowed = typing.get_args(fields["norm"]) or (norm,)
        if norm not in allowed:
            raise ConfigError(
                f"method {name!r} works in norm {' or '.join(map(repr, allowed))} only, not "
                f"norm={norm!r}: use norm={allowed[0]!r}"
            )
        kwargs["norm"] = norm
    try:
        return method_class(name)(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad parameters for method {name!r}: {error}") from None


__all__ = [
    "CE",
    "DDN",
    "IMA",
    "METHODS",
    "MMA",
    "AdvEps",
    "BatchContext",
    "Method",
    "MethodState",
    "RandEps",
    "StepOutput",
    "Trades",
    "build_method",
    "check_method_params",
    "method_class",
    "method_param_spec",
    "takes_eps",
]
