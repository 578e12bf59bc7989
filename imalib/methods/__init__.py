"""Training methods: one module per method, each holding only its per-batch loss."""

from __future__ import annotations

from typing import Any, Mapping

from imalib.methods.adv_eps import AdvEps
from imalib.methods.base import BatchContext, Method, StepOutput
from imalib.methods.ce import CE
from imalib.methods.ddn import DDN
from imalib.methods.ima import IMA
from imalib.methods.mma import MMA
from imalib.methods.rand_eps import RandEps
from imalib.methods.trades import Trades

METHODS: dict[str, type] = {"ce": CE, "rand": RandEps, "adv": AdvEps, "trades": Trades, "mma": MMA, "ddn": DDN,
                            "ima": IMA}
NEEDS_NORM = {"adv", "trades", "mma", "ima"}


def build_method(name: str, *, eps: float, norm: str, params: Mapping[str, Any] | None = None) -> Method:
    """Instantiate a method from its name, noise level, norm and extra parameters."""
    if name not in METHODS:
        raise ValueError(f"method={name!r} is not supported: use one of {', '.join(METHODS)}")
    from imalib.params import check_method_params

    kwargs: dict[str, Any] = dict(check_method_params(name, params or {}))
    if name != "ce":
        if not eps > 0:
            raise ValueError(f"method {name!r} needs eps > 0, got eps={eps}")
        kwargs["eps"] = eps
    if name in NEEDS_NORM:
        kwargs["norm"] = norm
    if name == "ddn" and norm != "l2":
        raise ValueError("method 'ddn' is an L2 method: use norm='l2'")
    try:
        return METHODS[name](**kwargs)  # type: ignore[no-any-return]
    except TypeError as error:
        raise ValueError(f"bad parameters for method {name!r}: {error}") from None


__all__ = ["AdvEps", "BatchContext", "CE", "DDN", "IMA", "METHODS", "MMA", "Method", "RandEps", "StepOutput",
           "Trades", "build_method"]
