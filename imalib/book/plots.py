"""Every figure of the book, drawn from real computations: one colour and one marker per method.

A method keeps its colour and marker in every figure: :func:`color_of` and :func:`marker_of` are
functions of the row label alone ('ima', 'adv0.3', ...), never of a row's position in a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from imalib.attacks import bisect_boundary, pgd
from imalib.paper import TABLES

if TYPE_CHECKING:
    from imalib.runs import Run

# One colour per training method. The fixed-eps baselines (adv, rand) have one row per training eps; each
# such label takes its own colour from its family's list, by the rank of its eps among every eps the paper's
# tables train that family at, so the rows of one table never share a colour (their marker shows the family).
METHOD_COLORS = {"ima": "#d62728", "mma": "#1f77b4", "trades": "#2ca02c", "ddn": "#9467bd", "ce": "#7f7f7f"}
FAMILY_COLORS = {
    "adv": (
        "#17becf",
        "#bcbd22",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#ffbb78",
        "#c49c94",
        "#f7b6d2",
        "#dbdb8d",
        "#9edae5",
    ),
    "rand": ("#98df8a", "#c5b0d5", "#ff9896"),
}
MARKERS = {"ima": "o", "mma": "s", "trades": "^", "ddn": "D", "adv": "v", "rand": "X", "ce": "P"}
OTHER_COLOR = "#000000"  # a label outside the paper's tables
_FAMILY_EPS = {
    family: sorted({row.eps for table in TABLES.values() for row in table.rows if row.method == family})
    for family in FAMILY_COLORS
}


def _family(label: str) -> tuple[str, float | None]:
    """('adv', 0.3) for 'adv0.3'; ('ima', None) for 'ima'; (label, None) for a label no table has."""
    for family in FAMILY_COLORS:
        if label.startswith(family) and label != family:
            try:
                return family, float(label[len(family) :])
            except ValueError:
                break
    return label, None


def color_of(label: str) -> str:
    """The colour of a method in every figure of the book (a function of the label alone)."""
    family, eps = _family(label)
    if family in METHOD_COLORS:
        return METHOD_COLORS[family]
    if family in FAMILY_COLORS and eps in _FAMILY_EPS[family]:
        colors = FAMILY_COLORS[family]
        return colors[_FAMILY_EPS[family].index(eps) % len(colors)]
    return OTHER_COLOR


def marker_of(label: str) -> str:
    """The marker of a method in every figure of the book."""
    return MARKERS.get(_family(label)[0], "o")


def placeholder(text: str) -> Figure:
    """A small figure that says, in words, why a figure cannot be drawn yet."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center")
    return fig


@torch.no_grad()
def decision_grid(
    model: nn.Module, xlim: tuple[float, float], ylim: tuple[float, float], n: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logit difference z_1 - z_0 on an n x n grid (its zero set is the decision boundary)."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    model.eval()
    logits = model(points)
    return gx, gy, (logits[:, 1] - logits[:, 0]).reshape(n, n).numpy()


def plot_decision_boundaries(
    runs: Sequence[Run],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cols: int = 3,
    xlim: tuple[float, float] = (-1.5, 2.5),
    ylim: tuple[float, float] = (-1.0, 1.5),
) -> Figure:
    """Figure 6 style: test points and each model's decision boundary, one panel per run."""
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        gx, gy, diff = decision_grid(run.model, xlim, ylim)
        ax.contourf(gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6)
        ax.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1.2)
        ax.scatter(x[:, 0], x[:, 1], c=np.where(y.numpy() == 1, "#cb181d", "#2171b5"), s=2, alpha=0.5)
        accuracy = run.record.accuracy
        ax.set_title(
            f"{run.config.label}: clean {accuracy[0]:.3f}, eps {run.record.eps[-1]:g}: {accuracy[-1]:.3f}", fontsize=9
        )
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_accuracy_curves(
    mean: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    *,
    title: str = "",
    std: pd.DataFrame | None = None,
    xlabel: str = "noise level eps",
) -> Figure:
    """Accuracy against noise level: ours solid (± one sd band), the paper's dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in mean.index:
        color = color_of(label)
        eps = np.array(mean.columns, dtype=float)
        values = mean.loc[label].to_numpy(dtype=float)
        ax.plot(eps, values, "-", marker=marker_of(label), color=color, ms=3, label=f"{label} (ours)")
        if std is not None:
            spread = std.loc[label].to_numpy(dtype=float)
            ax.fill_between(eps, values - spread, values + spread, color=color, alpha=0.15)
        if paper is not None and label in paper.index:
            ax.plot(
                np.array(paper.columns, dtype=float),
                paper.loc[label].to_numpy(dtype=float),
                "--",
                color=color,
                alpha=0.7,
                label=f"{label} (paper)",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_paper_curves(paper: pd.DataFrame, *, title: str = "", xlabel: str = "noise level eps") -> Figure:
    """The paper's reported accuracies against noise level, one dashed line per row, each labelled "(paper)".

    For the chapters whose runs do not exist here: the curves are the paper's numbers, not ours.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    eps = np.array(paper.columns, dtype=float)
    for label in paper.index:
        ax.plot(
            eps,
            paper.loc[label].to_numpy(dtype=float),
            "--",
            marker=marker_of(label),
            ms=3,
            color=color_of(label),
            label=f"{label} (paper)",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy reported by the paper")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_margin_histograms(margins: dict[str, torch.Tensor], eps_max: float, bins: int = 30) -> Figure:
    """Histograms of per-sample margin estimates (Figure 9 style), one panel per method."""
    if not margins:
        return placeholder("no run with per-sample margins (IMA, MMA) among these")
    fig, axes = plt.subplots(1, len(margins), figsize=(4 * len(margins), 3), squeeze=False)
    for ax, (label, values) in zip(axes.flat, margins.items()):
        ax.hist(values.numpy(), bins=bins, range=(0, max(eps_max, float(values.max()))), color=color_of(label))
        ax.set_title(f"{label}: mean {float(values.mean()):.3f}", fontsize=9)
        ax.set_xlabel("estimated margin")
    axes.flat[0].set_ylabel("training samples")
    fig.tight_layout()
    return fig


def plot_noisy_examples(
    runs: Sequence[Run],
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    *,
    class_names: Sequence[str] = ("non-COVID", "COVID"),
    clip: tuple[float, float] = (0.0, 1.0),
    steps: int = 100,
    seed: int = 0,
) -> Figure:
    """Figure 10 style: one row per run, a clean image then its 100-PGD noisy versions, titled with predictions."""
    fig, axes = plt.subplots(len(runs), len(eps_list), figsize=(2.2 * len(eps_list), 2.4 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        model = run.model.eval()
        for ax, eps in zip(row, eps_list):
            if eps > 0:
                image = pgd(
                    model,
                    x,
                    y,
                    eps,
                    norm="linf",
                    steps=steps,
                    step_size=eps / 10,
                    clip=clip,
                    generator=torch.Generator(device=x.device).manual_seed(seed),
                )
            else:
                image = x
            with torch.no_grad():
                label = int(model(image).argmax(dim=1)[0])
            ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{run.config.label}, eps {eps:g}\n→ {class_names[label]}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def pgd_path(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int,
    step_size: float,
    seed: int,
    loss: str = "ce",
    rand_init: bool = True,
) -> torch.Tensor:
    """The iterates x_(0..steps) of one seeded PGD run on one sample: shape (steps + 1, d).

    PGD with the same generator seed draws the same start, so running it with
    k steps gives iterate k of the full run.
    """
    points = [
        pgd(
            model,
            x,
            y,
            eps,
            norm="linf",
            steps=k,
            step_size=step_size,
            loss=loss,
            clip=None,
            rand_init=rand_init,
            generator=torch.Generator(device=x.device).manual_seed(seed),
        )[0]
        for k in range(steps + 1)
    ]
    return torch.stack(points)


def plot_bpgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 20,
    alpha: float = 4.0,
    n_binary: int = 10,
    seed: int = 0,
    span: float = 0.5,
) -> Figure:
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
        inside = path[first - 1 : first] if first > 0 else x
        outside = path[first : first + 1]
        brackets = [(inside, outside)]
        for k in range(1, n_binary + 1):
            brackets.append(bisect_boundary(model, inside, outside, y, k))
        a, b = brackets[0][0][0].numpy(), brackets[0][1][0].numpy()
        pad = max(np.abs(a - b).max(), 1e-3)
        for k, (low, high) in enumerate(brackets):
            lo, hi = low[0].numpy(), high[0].numpy()
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


def plot_disagreement(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    witness: torch.Tensor,
    *,
    title: str,
    steps: int = 100,
    seed: int = 0,
) -> Figure:
    """One Moons test point that PGD calls robust at ``eps`` although ``witness`` (a misclassified point inside
    its eps-square, found by the exact search) exists: the square, the decision boundary, the PGD iterates."""
    path = pgd_path(model, x, y, eps, steps=steps, step_size=eps / 10, seed=seed, loss="ce")
    centre = x[0].numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    gx, gy, diff = decision_grid(
        model, (centre[0] - 1.6 * eps, centre[0] + 1.6 * eps), (centre[1] - 1.6 * eps, centre[1] + 1.6 * eps), 300
    )
    ax.contourf(gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6)
    ax.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1)
    ax.add_patch(Rectangle(tuple(centre - eps), 2 * eps, 2 * eps, fill=False, ls="--", color="0.2"))
    p = path.numpy()
    ax.plot(p[:, 0], p[:, 1], ".-", color="0.35", lw=0.6, ms=3, label="PGD path (cross-entropy)")
    point = witness.numpy()
    ax.scatter(centre[0], centre[1], marker="*", s=150, c="k", label=f"test point (label {int(y)})")
    ax.scatter(point[0], point[1], marker="X", s=90, c="#cb181d", label="exact: misclassified point")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_calibration(scatter: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Stored margin estimates against the exact distance to the boundary, one panel per method
    (``scatter`` maps a label to (exact distances, stored margins))."""
    fig, axes = plt.subplots(1, max(1, len(scatter)), figsize=(4.5 * max(1, len(scatter)), 4), squeeze=False)
    for ax, (label, (true, stored)) in zip(axes.flat, scatter.items()):
        ax.scatter(true, stored, s=3, alpha=0.4, color=color_of(label), marker=marker_of(label))
        top = max(true.max(), stored.max())
        ax.plot([0, top], [0, top], "k--", lw=1)
        ax.set_xlabel("exact L-inf distance to the boundary")
        ax.set_ylabel("stored margin estimate")
        ax.set_title(label)
    if not scatter:
        axes.flat[0].axis("off")
    return fig


def plot_equilibrium(
    shifts: np.ndarray, losses_same: np.ndarray, losses_diff: np.ndarray, best_same: float, best_diff: float
) -> Figure:
    """The expected noisy-sample loss against the boundary position, for equal and for unequal distributions."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(shifts, losses_same, label="same distribution for both classes")
    ax.plot(shifts, losses_diff, label="class i around -0.10, class j around +0.15")
    ax.axvline(best_same, color="C0", ls=":")
    ax.axvline(best_diff, color="C1", ls=":")
    ax.set_xlabel("position of the decision boundary")
    ax.set_ylabel("expected noisy-sample loss E")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_NORM_NAME = {"linf": "L-inf", "l2": "L2"}


def plot_broken_examples(frame: pd.DataFrame, class_names: Sequence[str]) -> Figure:
    """Images PGD called robust and AutoAttack broke: one column each, the clean image over the attacked one.

    ``frame`` is :func:`imalib.book.robustness.broken_by_autoattack`'s; titles name
    the method, the noise level and the class before and after the attack.
    """
    if frame.empty:
        return placeholder("AutoAttack broke no image that PGD called robust in these runs.")
    n = len(frame)
    fig, axes = plt.subplots(2, n, figsize=(1.7 * n, 4.0), squeeze=False)
    for j, row in enumerate(frame.itertuples()):
        norm = _NORM_NAME.get(row.norm, row.norm)
        for ax, image, title in (
            (axes[0, j], row.image, f"{row.label}, {norm} {row.eps:g}\n{class_names[row.y]}"),
            (axes[1, j], row.adversarial, f"→ {class_names[row.adversarial_prediction]}\nmoved {row.distance:.3g}"),
        ):
            picture = image.detach().cpu().float()
            picture = picture[0] if picture.shape[0] == 1 else picture.permute(1, 2, 0)
            ax.imshow(picture.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7, color=color_of(row.label) if ax is axes[0, j] else "black")
            ax.axis("off")
    axes[0, 0].text(-0.15, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.15, 0.5, "AutoAttack", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    return fig
