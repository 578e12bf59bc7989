"""Explanatory figures drawn from real computations (BPGD on a trained model)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from imalib.attacks import bisect_boundary, pgd
from imalib.report import decision_grid


def pgd_path(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int, step_size: float,
             seed: int, loss: str = "ce", rand_init: bool = True) -> torch.Tensor:
    """The iterates x_(0..steps) of one seeded PGD run on one sample: shape (steps + 1, d).

    PGD with the same generator seed draws the same start, so running it with
    k steps gives iterate k of the full run.
    """
    points = [pgd(model, x, y, eps, norm="linf", steps=k, step_size=step_size, loss=loss, clip=None,
                  rand_init=rand_init, generator=torch.Generator().manual_seed(seed))[0] for k in range(steps + 1)]
    return torch.stack(points)


def plot_bpgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20, alpha: float = 4.0,
              n_binary: int = 10, seed: int = 0, span: float = 0.5) -> Figure:
    """BPGD on one Moons point: the eps-square, the PGD iterates, the two adjacent iterates that
    straddle the boundary, and the shrinking bisection brackets (Figures 2-3 of the paper)."""
    path = pgd_path(model, x, y, eps, steps=steps, step_size=alpha * eps / steps, seed=seed)
    with torch.no_grad():
        correct = model(path).argmax(dim=1) == y
    centre = x[0].numpy()
    xlim = (centre[0] - span, centre[0] + span)
    ylim = (centre[1] - span, centre[1] + span)
    gx, gy, diff = decision_grid(model, xlim, ylim, n=200)
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10, 4.4))
    for panel in (ax, zoom):
        panel.contourf(gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6)
        panel.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1)
    ax.add_patch(Rectangle(tuple(centre - eps), 2 * eps, 2 * eps, fill=False, ls="--", color="0.3"))
    p = path.numpy()
    ax.plot(p[:, 0], p[:, 1], "-", color="0.4", lw=0.8)
    ax.scatter(p[correct, 0], p[correct, 1], s=14, c="#2171b5", label="iterate, correct")
    ax.scatter(p[~correct, 0], p[~correct, 1], s=14, c="#cb181d", label="iterate, wrong")
    ax.scatter(*centre, marker="*", s=120, c="k", label="x")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(f"PGD iterates in the eps-square (eps = {eps:g})", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    if bool((~correct).any()):
        first = int(torch.nonzero(~correct)[0])
        inside = path[first - 1:first] if first > 0 else x
        outside = path[first:first + 1]
        brackets = [(inside, outside)]
        for k in range(1, n_binary + 1):
            brackets.append(bisect_boundary(model, inside, outside, y, k))
        a, b = brackets[0][0][0].numpy(), brackets[0][1][0].numpy()
        pad = max(np.abs(a - b).max(), 1e-3)
        for k, (lo, hi) in enumerate(brackets):
            lo, hi = lo[0].numpy(), hi[0].numpy()
            zoom.plot([lo[0], hi[0]], [lo[1], hi[1]], "-", color=plt.cm.viridis(k / n_binary), lw=2)
        mid = (brackets[-1][0][0] + brackets[-1][1][0]).numpy() / 2
        zoom.scatter(*mid, marker="x", s=60, c="k", label="x_n (midpoint)")
        zoom.scatter(*a, c="#2171b5", s=30, label="x_n1 (last correct)")
        zoom.scatter(*b, c="#cb181d", s=30, label="x_n2 (first wrong)")
        zoom.set_xlim(min(a[0], b[0]) - pad, max(a[0], b[0]) + pad)
        zoom.set_ylim(min(a[1], b[1]) - pad, max(a[1], b[1]) + pad)
        zoom.legend(fontsize=7)
        zoom.set_title(f"bisection between the adjacent iterates ({n_binary} steps)", fontsize=9)
    else:
        zoom.set_title("no iterate crossed the boundary (case-0): BPGD returns None", fontsize=9)
    fig.tight_layout()
    return fig


def plot_disagreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, witness: torch.Tensor, *,
                      title: str, steps: int = 100, seed: int = 0) -> Figure:
    """One Moons test point that PGD calls robust at ``eps`` although ``witness`` (a misclassified point inside
    its eps-square, found by the exact search) exists: the square, the decision boundary, the PGD iterates."""
    path = pgd_path(model, x, y, eps, steps=steps, step_size=eps / 10, seed=seed, loss="ce")
    centre = x[0].numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    gx, gy, diff = decision_grid(model, (centre[0] - 1.6 * eps, centre[0] + 1.6 * eps),
                                 (centre[1] - 1.6 * eps, centre[1] + 1.6 * eps), 300)
    ax.contourf(gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6)
    ax.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1)
    ax.add_patch(Rectangle(tuple(centre - eps), 2 * eps, 2 * eps, fill=False, ls="--", color="0.2"))
    p = path.numpy()
    ax.plot(p[:, 0], p[:, 1], ".-", color="0.35", lw=0.6, ms=3, label="PGD path (cross-entropy)")
    ax.scatter(*centre, marker="*", s=150, c="k", label=f"test point (label {int(y)})")
    ax.scatter(*witness.numpy(), marker="X", s=90, c="#cb181d", label="exact: misclassified point")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
