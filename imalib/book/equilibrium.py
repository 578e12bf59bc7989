"""Numerical checks of the equilibrium argument of section 2.3 (equations 3-8).

The paper argues that when noisy samples of classes i and j lie on the
boundary B_ij with the same spatial distribution, the expected cross-entropy
of those samples, E = E[-log P_i(X_n)] + E[-log P_j(X_n)] (eq. 7-8), is smallest
when P_i = P_j on them, i.e. when the boundary passes through them. These
functions set that up in one dimension, where it can be computed exactly;
:func:`halfway_ratios` measures the equilibrium's prediction on trained Moons models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.special import expit, log_expit
from torch import Tensor, nn

SCALE = 10.0  # the fixed slope of the 1-D model in checks 1-4 (check 5 frees it)


def boundary_loss(shift: float, samples_i: np.ndarray, samples_j: np.ndarray, scale: float = SCALE) -> float:
    """E(shift): mean -log P_i over class-i noisy samples plus mean -log P_j over class-j ones.

    The model is a 1-D two-class logistic classifier whose boundary sits at
    ``shift``: P_i(x) = sigmoid(scale * (shift - x)), P_j = 1 - P_i.
    """
    loss_i = -log_expit(scale * (shift - np.asarray(samples_i))).mean()
    loss_j = -log_expit(-scale * (shift - np.asarray(samples_j))).mean()
    return float(loss_i + loss_j)


def scan(samples_i: np.ndarray, samples_j: np.ndarray, shifts: np.ndarray, scale: float = SCALE) -> np.ndarray:
    """E at every boundary position in ``shifts``."""
    return np.array([boundary_loss(float(s), samples_i, samples_j, scale) for s in shifts])


def probabilities_at(shift: float, points: np.ndarray, scale: float = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(P_i, P_j) of the model with boundary ``shift`` at ``points``."""
    p_i = expit(scale * (shift - np.asarray(points)))
    return p_i, 1.0 - p_i


def am_gm_gap(p_i: np.ndarray, p_j: np.ndarray) -> np.ndarray:
    """Eq. (8): -log(P_i P_j) - (-log(((P_i + P_j) / 2)^2)), which must be >= 0 (zero iff P_i = P_j)."""
    return -np.log(p_i * p_j) + np.log(((p_i + p_j) / 2) ** 2)


def weighted_loss(
    shift: float, samples_i: np.ndarray, samples_j: np.ndarray, weight_i: float, scale: float = SCALE
) -> float:
    """Eqs. (4)-(6) read as what they are, a mixture: ``weight_i`` E[-log P_i] + (1 - ``weight_i``) E[-log P_j],
    where the weights are the shares of the boundary's noisy samples that come from each class."""
    loss_i = -log_expit(scale * (shift - np.asarray(samples_i))).mean()
    loss_j = -log_expit(-scale * (shift - np.asarray(samples_j))).mean()
    return float(2 * (weight_i * loss_i + (1 - weight_i) * loss_j))


def clean_loss(shift: float, clean_i: np.ndarray, clean_j: np.ndarray, scale: float) -> float:
    """Mean cross-entropy of clean samples of both classes under the 1-D model (boundary ``shift``, slope ``scale``)."""
    return float(-log_expit(scale * (shift - clean_i)).mean() - log_expit(-scale * (shift - clean_j)).mean())


def best_on_grid(loss: Any, shifts: np.ndarray, slopes: np.ndarray) -> tuple[float, float, float]:
    """(shift, slope, loss) minimising ``loss(shift, slope)`` over the grid."""
    values = np.array([[loss(float(a), float(b)) for b in slopes] for a in shifts])
    i, j = np.unravel_index(int(values.argmin()), values.shape)
    return float(shifts[i]), float(slopes[j]), float(values[i, j])


def three_class(
    samples_1: np.ndarray, samples_2: np.ndarray, third: float, shifts: np.ndarray, scale: float = SCALE
) -> dict[str, float]:
    """A three-class softmax with logits (s(shift - x)/2, -s(shift - x)/2, ``third``) on noisy samples of classes
    1 and 2 on their boundary B_12: the minimising shift, E there, and the bound (8) there, which with a third
    class is -log((P_1 + P_2)/2)^2 = 2 log 2 - 2 log(1 - P_3): not a constant."""

    def probabilities(shift: float, x: np.ndarray) -> np.ndarray:
        z = np.stack([scale * (shift - x) / 2, -scale * (shift - x) / 2, np.full_like(x, third)], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    losses = np.array(
        [
            -np.log(probabilities(s, samples_1)[:, 0]).mean() - np.log(probabilities(s, samples_2)[:, 1]).mean()
            for s in shifts
        ]
    )
    best = float(shifts[losses.argmin()])
    p = probabilities(best, np.concatenate([samples_1, samples_2]))
    bound = float(-np.log(((p[:, 0] + p[:, 1]) / 2) ** 2).mean())
    return {"shift": best, "loss": float(losses.min()), "bound": bound, "p3": float(p[:, 2].mean())}


def checks(seed: int = 0) -> dict[str, Any]:
    """The four numerical checks of the Equilibrium chapter, as glue values (numbers formatted) and its figure.

    1. one class-i and one class-j noisy sample at the same point; 2. one distribution around 0 for both
    classes; 3. two different distributions; 4. inequality (8) on random probability pairs.
    """
    from imalib.book.plots import plot_equilibrium

    rng = np.random.default_rng(seed)
    shifts = np.linspace(-0.5, 0.5, 2001)
    same = rng.normal(0.0, 0.05, 4000)  # both classes' noisy samples: one distribution around 0
    losses_same = scan(same[:2000], same[2000:], shifts)
    best_same = shifts[losses_same.argmin()]
    p_i, p_j = probabilities_at(best_same, same)
    point_mass = scan(np.zeros(1), np.zeros(1), shifts)
    shifted_i, shifted_j = rng.normal(-0.1, 0.05, 2000), rng.normal(0.15, 0.05, 2000)  # unequal distributions
    losses_diff = scan(shifted_i, shifted_j, shifts)
    best_diff = shifts[losses_diff.argmin()]
    p = rng.uniform(1e-6, 1.0, (2, 100000))
    p = p / np.maximum(p.sum(0), 1.0)  # any P_i, P_j with P_i + P_j <= 1
    gaps = am_gm_gap(p[0], p[1])
    # 5. the slope: with it free, the noisy samples alone prefer a flat model; clean samples pin it
    slopes = np.geomspace(1e-3, 1e3, 121)
    coarse = np.linspace(-0.2, 0.2, 81)
    fixed = boundary_loss(best_same, same[:2000], same[2000:])
    free = best_on_grid(lambda a, b: boundary_loss(a, same[:2000], same[2000:], b), coarse, slopes)
    clean_i, clean_j = rng.normal(-0.5, 0.1, 2000), rng.normal(0.5, 0.1, 2000)
    pinned = best_on_grid(
        lambda a, b: clean_loss(a, clean_i, clean_j, b) + boundary_loss(a, same[:2000], same[2000:], b), coarse, slopes
    )
    # 6. eqs. (4)-(6) as a mixture: three class-i noisy samples for every class-j one on the same boundary
    weighted = np.array([weighted_loss(float(s), same[:2000], same[2000:], 0.75) for s in shifts])
    # 7. three classes: the third class's logit changes E and the bound (8) at the minimiser
    thirds = {third: three_class(same[:2000], same[2000:], third, shifts) for third in (-6.0, -2.0, 0.0, 2.0)}
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
        "eq_scale": format(SCALE, "g"),
        "eq_fixed_loss": format(fixed, ".3f"),
        "eq_free_slope": format(free[1], ".3g"),
        "eq_free_loss": format(free[2], ".3f"),
        "eq_slope_min": format(slopes.min(), "g"),
        "eq_pinned_slope": format(pinned[1], ".3g"),
        "eq_pinned_shift": format(pinned[0], "+.3f"),
        "eq_weighted_best": format(float(shifts[weighted.argmin()]), "+.4f"),
        "eq_three_table": three_class_table(thirds),
        "eq_three_shift_max": format(max(abs(t["shift"]) for t in thirds.values()), ".4f"),
        "eq_three_bound_range": f"{min(t['bound'] for t in thirds.values()):.3f} to "
        f"{max(t['bound'] for t in thirds.values()):.3f}",
        "eq_three_gap_min": format(min(t["loss"] - t["bound"] for t in thirds.values()), ".3f"),
    }


def three_class_table(thirds: dict[float, dict[str, float]]) -> Any:
    """The three-class check as a table: one row per value of the third class's logit."""
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "third logit": f"{third:g}",
                "mean P_3": f"{t['p3']:.3f}",
                "minimising shift": f"{t['shift']:+.4f}",
                "E there": f"{t['loss']:.3f}",
                "bound (8) there": f"{t['bound']:.3f}",
            }
            for third, t in thirds.items()
        ]
    )
    return frame.set_index("third logit")


# ------------------------------------------------------------------------------- on trained Moons models
BALANCE_SAMPLES = 20000  # the training points (already in random order) searched for colliding pairs


def _rounded(values: Tensor) -> list[float]:
    """Four decimals: the exact distances are good to their resolution (1e-3), and the cache stays small."""
    return [round(float(v), 4) for v in values]


def nearest_other_class(x: Tensor, y: Tensor, chunk: int = 2000) -> tuple[Tensor, Tensor]:
    """Per point, the L-inf distance to its nearest point of another class and that point's index."""
    pool = x.double().flatten(1)
    gaps, index = [], []
    for start in range(0, len(pool), chunk):
        block = torch.cdist(pool[start : start + chunk], pool, p=float("inf"))
        block[y[start : start + chunk].unsqueeze(1) == y.unsqueeze(0)] = float("inf")
        value, where = block.min(dim=1)
        gaps.append(value)
        index.append(where)
    return torch.cat(gaps), torch.cat(index)


def halfway_ratios(
    model: nn.Module,
    pool_x: Tensor,
    pool_y: Tensor,
    *,
    n_points: int,
    eps_max: float,
    resolution: float = 1e-3,
    mutual: bool = False,
) -> dict[str, Any]:
    """What the equilibrium of section 2.3 predicts for two colliding samples, measured on a trained model.

    Pairs: each of the first ``n_points`` points x of the pool and its nearest point x' of the other class
    (L-inf), kept when both are classified correctly and the half gap h = |x - x'|_inf / 2 is below
    ``eps_max`` (their balls collide within IMA's cap); ``mutual=True`` keeps only pairs where x is also the
    nearest other-class point of x', so that neither was picked for intruding on the other's side.
    At the equilibrium the boundary passes halfway and both margins reach it: the exact distances d, d' to
    the boundary give usage u = (d + d') / 2h = 1 (u is at most 1) and imbalance |d - d'| / (d + d') = 0.
    Returns the pair, u and the imbalance and h per pair. Without ``mutual`` the partner is often a point
    near the boundary of x's side, which raises every model's imbalance: compare models, not with 0.
    """
    from imalib.evaluate import predict
    from imalib.exact import exact_linf_distance

    gap, nearest = nearest_other_class(pool_x, pool_y)
    first = torch.arange(min(n_points, len(pool_x)))
    partner = nearest[first]
    correct = predict(model, pool_x) == pool_y
    keep = correct[first] & correct[partner] & (gap[first] / 2 < eps_max)
    if mutual:
        keep &= (nearest[partner] == first) & (first < partner)  # each mutual pair once
    a, b, half = first[keep], partner[keep], gap[first][keep] / 2
    if a.numel() == 0:
        d = torch.zeros(0, 2, dtype=torch.float64)
    else:
        both = torch.cat([a, b])
        cap = float(2 * half.max()) + resolution
        d = exact_linf_distance(model, pool_x[both], pool_y[both], max_radius=cap, resolution=resolution)
        d = d.view(2, -1).T
    total = d.sum(dim=1)
    return {
        "pair": torch.stack([a, b], dim=1).tolist() if a.numel() else [],
        "usage": _rounded(total / (2 * half)),
        "imbalance": _rounded((d[:, 0] - d[:, 1]).abs() / total.clamp_min(1e-12)),
        "half_gap": _rounded(half),
        "points": int(len(first)),
        "pairs": int(keep.sum()),
        "resolution": resolution,
        "eps_max": eps_max,
    }


def balance_summary(analyses: Mapping[tuple[str, int], Mapping[str, Any]]) -> Any:
    """Per label (in the order given), from :func:`halfway_ratios` per (label, seed): the medians of usage and
    imbalance over the pairs that every label of the same seed classifies correctly (the same pairs for
    every model, so no model is judged on easier pairs), pooled over seeds; the pairs and the range of the
    per-seed medians of imbalance."""
    import pandas as pd

    seeds = sorted({seed for _, seed in analyses})
    labels = list(dict.fromkeys(label for label, _ in analyses))
    rows = []
    for seed in seeds:
        mine = {label: analyses[(label, seed)] for label in labels if (label, seed) in analyses}
        common = set.intersection(*(set(map(tuple, a["pair"])) for a in mine.values()))
        for label, a in mine.items():
            for pair, usage, imbalance in zip(a["pair"], a["usage"], a["imbalance"], strict=True):
                if tuple(pair) in common:
                    rows.append({"label": label, "seed": seed, "usage": usage, "imbalance": imbalance})
    frame = pd.DataFrame(rows, columns=["label", "seed", "usage", "imbalance"])
    out = []
    for label in labels:
        group = frame[frame["label"] == label]
        per_seed = group.groupby("seed")["imbalance"].median()
        out.append({
            "label": label,
            "median usage": float(group["usage"].median()),
            "median imbalance": float(group["imbalance"].median()),
            "pairs": len(group),
            "seeds": int(group["seed"].nunique()),
            "seed medians of imbalance": f"{per_seed.min():.2f}–{per_seed.max():.2f}" if len(per_seed) else "n/a",
        })  # fmt: skip
    return pd.DataFrame(out).set_index("label")
