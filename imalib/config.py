"""Frozen run configurations: built from and turned into plain dicts, with a stable hash.

This module imports only :mod:`imalib.errors` (no torch, so the command line
can build its help from it). The dataset, norm, profile and optimizer are
checked against their ``Literal`` aliases here; the method name and its
parameters are checked once, where a method is built
(:func:`imalib.methods.build_method`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from imalib.errors import ConfigError

# The same alias as imalib.norms.Norm (tests/test_config.py checks that they agree), spelled here so that
# this module needs no torch.
Norm = Literal["linf", "l2"]

Dataset = Literal["moons", "fashion_mnist", "svhn", "covid"]
Profile = Literal["smoke", "cpu", "paper"]
Optimizer = Literal["adam", "adamw"]
DATASETS: tuple[str, ...] = get_args(Dataset)
PROFILES: tuple[str, ...] = get_args(Profile)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
NORMS: tuple[str, ...] = get_args(Norm)
# The largest noise level that makes sense per norm for inputs in [0, 1]; Moons is unbounded
# but its two classes are about 1 apart, so the same L-inf limit serves.
EPS_LIMIT = {"linf": 1.0, "l2": 100.0}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported: use one of {', '.join(allowed)}")


def _freeze(params: Mapping[str, Any] | tuple[tuple[str, Any], ...] | None) -> tuple[tuple[str, Any], ...]:
    if params is None:
        return ()
    items = params.items() if isinstance(params, Mapping) else params
    return tuple(sorted((str(k), v) for k, v in items))


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training + evaluation run.

    ``eps`` is the training noise level: eps_max for IMA, MMA (d_max), TRADES
    and DDN; eps for adv and rand; 0 for ce. ``eval_eps`` are the noise levels of
    the paper's table for this dataset and norm. ``method_params`` override a
    method's defaults (e.g. beta, margin_mode); ``data_params`` a loader's
    (e.g. the make_moons noise).
    """

    dataset: Dataset
    method: str
    norm: Norm
    eps: float
    profile: Profile
    epochs: int
    batch_size: int
    eval_eps: tuple[float, ...]
    seed: int = 0
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    weight_decay: float = 0.0
    n_train: int | None = None
    n_test: int | None = None
    eval_steps: int = 100
    eval_batch: int = 1000
    method_params: tuple[tuple[str, Any], ...] = field(default=())
    data_params: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        if not isinstance(self.method, str) or not self.method.isidentifier():
            raise ConfigError(f"method={self.method!r} must be a method name such as 'ima'")
        _choice("norm", self.norm, NORMS)
        _choice("profile", self.profile, PROFILES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("epochs", "batch_size", "eval_steps", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name}={value!r} must be a positive integer or None (the whole set)")
        limit = EPS_LIMIT[self.norm]
        if not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) or self.eps < 0 or self.eps > limit:
            raise ConfigError(f"eps={self.eps!r} is outside [0, {limit}] for norm {self.norm!r}")
        for value in self.eval_eps:
            if not isinstance(value, (int, float)) or not 0 <= value <= limit:
                raise ConfigError(f"eval_eps value {value!r} is outside [0, {limit}] for norm {self.norm!r}")
        if list(self.eval_eps) != sorted(self.eval_eps):
            raise ConfigError(f"eval_eps={list(self.eval_eps)} must be in increasing order")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be positive")
        object.__setattr__(self, "eval_eps", tuple(float(v) for v in self.eval_eps))
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "method_params", _freeze(self.method_params))
        object.__setattr__(self, "data_params", _freeze(self.data_params))

    @property
    def label(self) -> str:
        """The row name the paper's tables use: 'ima', 'adv0.3', 'rand0.1', 'ce', ..."""
        if self.method in ("adv", "rand"):
            return f"{self.method}{self.eps:g}"
        return self.method

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["eval_eps"] = list(self.eval_eps)
        out["method_params"] = dict(self.method_params)
        out["data_params"] = dict(self.data_params)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys {unknown}; allowed: {sorted(known)}")
        kwargs = dict(values)
        if "eval_eps" in kwargs:
            kwargs["eval_eps"] = tuple(kwargs["eval_eps"])
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise ConfigError(str(error)) from None

    def hash(self) -> str:
        """A stable 12-hex-digit digest of the configuration; it names the run directory."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> RunConfig:
        values = self.to_dict()
        values.update(changes)
        return RunConfig.from_dict(values)
