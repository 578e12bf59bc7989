"""Numerical checks of the equilibrium argument of section 2.3 (equations 3-8).

The paper argues that when noisy samples of classes i and j lie on the
boundary B_ij with the same spatial distribution, the expected cross-entropy
of those samples, E = E[-log P_i(X_n)] + E[-log P_j(X_n)] (eq. 7-8), is smallest
when P_i = P_j on them, i.e. when the boundary passes through them. These
functions set that up in one dimension, where it can be computed exactly.
"""

from __future__ import annotations

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
