"""The run configuration: its vocabulary agrees with the primitives, and it needs no torch."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from imalib import config, norms
from imalib.config import RunConfig
from imalib.errors import ConfigError


def test_config_vocabulary_matches_the_primitives() -> None:
    """config.py spells the norm alias itself (so that it needs no torch): it must agree with imalib.norms."""
    assert get_args(config.Norm) == get_args(norms.Norm) and config.NORMS == norms.NORMS


def test_config_and_cli_import_no_torch() -> None:
    code = ("import sys, imalib.config, imalib.cli; "
            "print(sorted(m for m in ('torch', 'pandas', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_attacks_import_torch_only() -> None:
    code = ("import sys, imalib.attacks; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'scipy', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_method_is_a_name_checked_where_it_is_built() -> None:
    values = {"dataset": "moons", "method": "ima", "norm": "linf", "eps": 0.3, "profile": "smoke", "epochs": 1,
              "batch_size": 8, "eval_eps": (0.0, 0.1)}
    assert RunConfig.from_dict(values).method == "ima"
    with pytest.raises(ConfigError, match="must be a method name"):
        RunConfig.from_dict({**values, "method": "not a name"})
    with pytest.raises(ConfigError, match="seed=-1 must be a non-negative integer"):
        RunConfig.from_dict({**values, "seed": -1})
    for key, bad in (("dataset", "mnist"), ("norm", "l1"), ("profile", "huge"), ("optimizer", "sgd")):
        with pytest.raises(ConfigError, match=f"{key}='{bad}' is not supported"):
            RunConfig.from_dict({**values, key: bad})


def test_public_api_resolves_lazily() -> None:
    import imalib

    assert set(imalib.__all__) == set(imalib._API) | {"__version__"}
    for name in imalib._API:
        assert getattr(imalib, name) is not None
