"""Numerical checks of the equilibrium argument of section 2.3 (equations 3-8).

The paper argues that when noisy samples of classes i and j lie on the
boundary B_ij with the same spatial distribution, the expected cross-entropy
of those samples, E = E[-log P_i(X_n)] + E[-log P_j(X_n)] (eq. 7-8), is smallest
when P_i = P_j on them, i.e. when the boundary passes through them. These
functions set that up in one dimension, where it can be computed exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_expit


def boundary_loss(shift: float, samples_i: np.ndarray, samples_j: np.ndarray, scale: float = 10.0) -> float:
    """E(shift): mean -log P_i over class-i noisy samples plus mean -log P_j over class-j ones.

    The model is a 1-D two-class logistic classifier whose boundary sits at
    ``shift``: P_i(x) = sigmoid(scale * (shift - x)), P_j = 1 - P_i.
    """
    loss_i = -log_expit(scale * (shift - np.asarray(samples_i))).mean()
    loss_j = -log_expit(-scale * (shift - np.asarray(samples_j))).mean()
    return float(loss_i + loss_j)


def scan(samples_i: np.ndarray, samples_j: np.ndarray, shifts: np.ndarray, scale: float = 10.0) -> np.ndarray:
    """E at every boundary position in ``shifts``."""
    return np.array([boundary_loss(float(s), samples_i, samples_j, scale) for s in shifts])


def probabilities_at(shift: float, points: np.ndarray, scale: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(P_i, P_j) of the model with boundary ``shift`` at ``points``."""
    p_i = expit(scale * (shift - np.asarray(points)))
    return p_i, 1.0 - p_i


def am_gm_gap(p_i: np.ndarray, p_j: np.ndarray) -> np.ndarray:
    """Eq. (8): -log(P_i P_j) - (-log(((P_i + P_j) / 2)^2)), which must be >= 0 (zero iff P_i = P_j)."""
    return -np.log(p_i * p_j) + np.log(((p_i + p_j) / 2) ** 2)


def checks(seed: int = 0) -> dict[str, Any]:
    """The four numerical checks of the Equilibrium chapter, as glue values (numbers formatted) and its figure.

    1. one class-i and one class-j noisy sample at the same point; 2. one distribution around 0 for both
    classes; 3. two different distributions; 4. inequality (8) on random probability pairs.
    """
    from imalib.book.plots import plot_equilibrium

    rng = np.random.default_rng(seed)
    shifts = np.linspace(-0.5, 0.5, 2001)
    same = rng.normal(0.0, 0.05, 4000)                 # both classes' noisy samples: one distribution around 0
    losses_same = scan(same[:2000], same[2000:], shifts)
    best_same = shifts[losses_same.argmin()]
    p_i, p_j = probabilities_at(best_same, same)
    point_mass = scan(np.zeros(1), np.zeros(1), shifts)
    shifted_i, shifted_j = rng.normal(-0.1, 0.05, 2000), rng.normal(0.15, 0.05, 2000)   # unequal distributions
    losses_diff = scan(shifted_i, shifted_j, shifts)
    best_diff = shifts[losses_diff.argmin()]
    p = rng.uniform(1e-6, 1.0, (2, 100000))
    p = p / np.maximum(p.sum(0), 1.0)                   # any P_i, P_j with P_i + P_j <= 1
    gaps = am_gm_gap(p[0], p[1])
    return {
        "eq_figure": plot_equilibrium(shifts, losses_same, losses_diff, best_same, best_diff),
        "eq_best_same": format(best_same, "+.4f"),
        "eq_pdiff_mean": format(float(np.abs(p_i - p_j).mean()), ".3f"),
        "eq_point_mass_min": format(point_mass.min(), ".6f"),
        "eq_two_log_two": format(2 * np.log(2), ".6f"),
        "eq_point_mass_argmin": format(shifts[point_mass.argmin()], "+.4f"),
        "eq_best_diff": format(best_diff, "+.4f"),
        "eq_min_gap": format(gaps.min(), ".2e"),
        "eq_n_pairs": format(gaps.size, ","),
    }
