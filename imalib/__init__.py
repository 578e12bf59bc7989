"""imalib: Increasing-Margin Adversarial (IMA) training and its baselines, as in Ma & Liang.

The public API: attacks (:func:`pgd`, :func:`bpgd`), the margin store, the
training methods and the one :func:`fit` loop, the paper's evaluation, and run
directories that tie a frozen :class:`RunConfig` to its typed result records.

Every name is imported on first use, so ``import imalib.attacks`` costs torch
alone and ``python -m imalib --help`` needs no torch at all.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

# MKL picks its float32 kernels by CPU (an AVX-512 Xeon takes other code paths than an AMD EPYC), which changes
# the last bits of training on another machine. Its conditional-numerical-reproducibility switch pins the AVX2
# path on every CPU that has AVX2. It is read at MKL's first call, so it is set here, before torch computes
# anything; a value the user set is kept, and every record states the one in force (``mkl_cbwr``).
# Measured on an AMD EPYC (AVX-512): AVX2 is the path MKL takes there anyway (no bit changes); see the
# Reproducing chapter for what is and is not known about other CPUs.
MKL_CBWR_DEFAULT = "AVX2"
os.environ.setdefault("MKL_CBWR", MKL_CBWR_DEFAULT)

__version__ = "0.1.0"

# public name -> the module that defines it
_API: dict[str, str] = {
    "BoundaryResult": "imalib.attacks",
    "bpgd": "imalib.attacks",
    "ddn": "imalib.attacks",
    "pgd": "imalib.attacks",
    "trades_kl_attack": "imalib.attacks",
    "CheckpointError": "imalib.errors",
    "ConfigError": "imalib.errors",
    "DataError": "imalib.errors",
    "TrainingDiverged": "imalib.errors",
    "RunConfig": "imalib.config",
    "RobustnessResult": "imalib.evaluate",
    "evaluate_robustness": "imalib.evaluate",
    "MarginStore": "imalib.margins",
    "build_method": "imalib.methods",
    "build_model": "imalib.models",
    "table_configs": "imalib.profiles",
    "ResultRecord": "imalib.records",
    "collect": "imalib.records",
    "Run": "imalib.runs",
    "load_run": "imalib.runs",
    "run_experiment": "imalib.runs",
    "fit": "imalib.train",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"imalib.{name}") is not None:  # a submodule, as an attribute
        return importlib.import_module(f"imalib.{name}")
    raise AttributeError(f"module 'imalib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


__all__ = [
    "BoundaryResult",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MarginStore",
    "ResultRecord",
    "RobustnessResult",
    "Run",
    "RunConfig",
    "TrainingDiverged",
    "__version__",
    "bpgd",
    "build_method",
    "build_model",
    "collect",
    "ddn",
    "evaluate_robustness",
    "fit",
    "load_run",
    "pgd",
    "run_experiment",
    "table_configs",
    "trades_kl_attack",
]
