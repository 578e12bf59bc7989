"""Attacks as pure functions: they read the model, never change it, and return new tensors."""

from imalib.attacks.bpgd import BoundaryResult, bisect_boundary, bpgd
from imalib.attacks.ddn import ddn
from imalib.attacks.pgd import pgd, pgd_tracked
from imalib.attacks.trades_kl import trades_kl_attack

__all__ = ["BoundaryResult", "bisect_boundary", "bpgd", "ddn", "pgd", "pgd_tracked", "trades_kl_attack"]
