"""Frozen run configurations: built from and turned into plain dicts, with a stable hash."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from imalib.methods import METHODS
from imalib.norms import NORMS

DATASETS = ("moons", "fashion_mnist", "svhn", "covid")
PROFILES = ("smoke", "cpu", "paper")
OPTIMIZERS = ("adam", "adamw")
# The largest noise level that makes sense per norm for inputs in [0, 1]; Moons is unbounded
# but its two classes are about 1 apart, so the same L-inf limit serves.
EPS_LIMIT = {"linf": 1.0, "l2": 100.0}


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the value and the choices."""


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

    dataset: str
    method: str
    norm: str
    eps: float
    profile: str
    epochs: int
    batch_size: int
    eval_eps: tuple[float, ...]
    seed: int = 0
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    n_train: int | None = None
    n_test: int | None = None
    eval_steps: int = 100
    eval_batch: int = 1000
    method_params: tuple[tuple[str, Any], ...] = field(default=())
    data_params: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        _choice("method", self.method, tuple(METHODS))
        _choice("norm", self.norm, NORMS)
        _choice("profile", self.profile, PROFILES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("epochs", "batch_size", "eval_steps", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name}={value!r} must be a positive integer or None (the whole set)")
        limit = EPS_LIMIT[self.norm]
        if not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) or self.eps < 0 or self.eps > limit:
            raise ConfigError(f"eps={self.eps!r} is outside [0, {limit}] for norm {self.norm!r}")
        if self.method != "ce" and self.eps <= 0:
            raise ConfigError(f"eps={self.eps!r}: method {self.method!r} needs eps > 0")
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
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
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

    def replace(self, **changes: Any) -> "RunConfig":
        values = self.to_dict()
        values.update(changes)
        return RunConfig.from_dict(values)
