"""imalib: Increasing-Margin Adversarial (IMA) training and its baselines, as in Ma & Liang.

The public API: attacks (:func:`pgd`, :func:`bpgd`), the margin store, the
training methods and the one :func:`fit` loop, the paper's evaluation, and run
directories that tie a frozen :class:`RunConfig` to its results.
"""

from imalib.attacks import BoundaryResult, bpgd, ddn, pgd, trades_kl_attack
from imalib.config import ConfigError, RunConfig
from imalib.evaluate import RobustnessResult, evaluate_robustness
from imalib.margins import MarginStore
from imalib.methods import build_method
from imalib.models import build_model
from imalib.profiles import table_configs
from imalib.runs import Run, load_run, run_experiment
from imalib.train import TrainingDiverged, fit

__version__ = "0.1.0"

__all__ = [
    "BoundaryResult", "ConfigError", "MarginStore", "RobustnessResult", "Run", "RunConfig", "TrainingDiverged",
    "bpgd", "build_method", "build_model", "ddn", "evaluate_robustness", "fit", "load_run", "pgd",
    "run_experiment", "table_configs", "trades_kl_attack",
]
