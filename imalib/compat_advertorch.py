"""Import advertorch 0.2.3 (the paper's evaluator) on a modern PyTorch.

advertorch 0.2.3, the latest release on PyPI, imports
``torch.autograd.gradcheck.zero_gradients``, which PyTorch removed in 1.9, so
``import advertorch.attacks`` fails with ImportError. The helper only zeroed
the ``.grad`` of a tensor (or of every tensor in an iterable); we put an
equivalent back on the module before advertorch is imported. Nothing else in
advertorch is touched. Used only as an independent cross-check of our PGD.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import torch


def zero_gradients(x: Any) -> None:
    """Zero ``x.grad`` in place for a tensor, or for each tensor in an iterable."""
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, Iterable):
        for item in x:
            zero_gradients(item)


def import_advertorch_attacks() -> ModuleType:
    """Restore ``zero_gradients`` if missing, then return ``advertorch.attacks``."""
    # ``torch.autograd.gradcheck`` the attribute is the function; the module must be looked up by name.
    gradcheck = importlib.import_module("torch.autograd.gradcheck")
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = zero_gradients  # type: ignore[attr-defined]
    import advertorch.attacks as attacks

    return attacks
