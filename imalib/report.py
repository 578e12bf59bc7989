"""Tables and figures for the book, computed from finished runs (never typed by hand)."""

from __future__ import annotations

from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from imalib.runs import Run


def results_frame(runs: Iterable[Run], column: str = "accuracy") -> pd.DataFrame:
    """Long table: one row per (run, eps) with label, seed, data parameters and the chosen column."""
    rows = []
    for run in runs:
        config, result = run.config, run.result
        extra = {f"data_{k}": v for k, v in config.data_params}
        extra.update({f"param_{k}": v for k, v in config.method_params})
        for eps, value, envelope, rises in zip(result["eps"], result[column], result["envelope"], result["rises"]):
            rows.append({"label": config.label, "seed": config.seed, "profile": config.profile, "eps": eps,
                         "accuracy": value, "envelope": envelope, "rises": rises, **extra})
    return pd.DataFrame(rows)


def mean_table(frame: pd.DataFrame, value: str = "accuracy", order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over seeds: rows are labels, columns eps."""
    table = frame.pivot_table(index="label", columns="eps", values=value, aggfunc="mean")
    return table.reindex(order) if order is not None else table


def std_table(frame: pd.DataFrame, value: str = "accuracy", order: Sequence[str] | None = None) -> pd.DataFrame:
    """Sample standard deviation over seeds (0 for a single seed)."""
    table = frame.pivot_table(index="label", columns="eps", values=value, aggfunc=lambda v: float(np.std(v, ddof=1))
                              if len(v) > 1 else 0.0)
    return table.reindex(order) if order is not None else table


def mean_std_text(mean: pd.DataFrame, std: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Cells formatted 'mean ± sd'."""
    out = mean.astype(object).copy()
    for row in mean.index:
        for column in mean.columns:
            out.loc[row, column] = f"{mean.loc[row, column]:.{digits}f} ± {std.loc[row, column]:.{digits}f}"
    return out


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Per cell 'ours / paper (difference)', for the labels and eps both tables have."""
    labels = [label for label in ours.index if label in paper.index]
    eps = [e for e in ours.columns if e in paper.columns]
    cells = {}
    for e in eps:
        cells[e] = [f"{ours.loc[l, e]:.{digits}f} / {paper.loc[l, e]:.{digits}f} ({ours.loc[l, e] - paper.loc[l, e]:+.{digits}f})"
                    for l in labels]
    return pd.DataFrame(cells, index=labels)


def difference(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """ours - paper for the common labels and eps."""
    labels = [label for label in ours.index if label in paper.index]
    eps = [e for e in ours.columns if e in paper.columns]
    return ours.loc[labels, eps] - paper.loc[labels, eps]


@torch.no_grad()
def decision_grid(model: nn.Module, xlim: tuple[float, float], ylim: tuple[float, float], n: int = 300
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logit difference z_1 - z_0 on an n x n grid (its zero set is the decision boundary)."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    model.eval()
    logits = model(points)
    return gx, gy, (logits[:, 1] - logits[:, 0]).reshape(n, n).numpy()


def plot_decision_boundaries(runs: Sequence[Run], x: torch.Tensor, y: torch.Tensor, *, cols: int = 3,
                             xlim: tuple[float, float] = (-1.5, 2.5), ylim: tuple[float, float] = (-1.0, 1.5)) -> Figure:
    """Figure 6 style: test points and each model's decision boundary, one panel per run."""
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        gx, gy, diff = decision_grid(run.model, xlim, ylim)
        ax.contourf(gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6)
        ax.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1.2)
        ax.scatter(x[:, 0], x[:, 1], c=np.where(y.numpy() == 1, "#cb181d", "#2171b5"), s=2, alpha=0.5)
        accuracy = run.result["accuracy"]
        ax.set_title(f"{run.config.label}: clean {accuracy[0]:.3f}, eps {run.result['eps'][-1]:g}: {accuracy[-1]:.3f}",
                     fontsize=9)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_accuracy_curves(mean: pd.DataFrame, paper: pd.DataFrame | None = None, *, title: str = "",
                         std: pd.DataFrame | None = None, xlabel: str = "noise level eps") -> Figure:
    """Accuracy against noise level: ours solid (± one sd band), the paper's dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(mean.index):
        color = colors[i % len(colors)]
        eps = np.array(mean.columns, dtype=float)
        values = mean.loc[label].to_numpy(dtype=float)
        ax.plot(eps, values, "-o", color=color, ms=3, label=f"{label} (ours)")
        if std is not None:
            spread = std.loc[label].to_numpy(dtype=float)
            ax.fill_between(eps, values - spread, values + spread, color=color, alpha=0.15)
        if paper is not None and label in paper.index:
            ax.plot(np.array(paper.columns, dtype=float), paper.loc[label].to_numpy(dtype=float), "--",
                    color=color, alpha=0.7, label=f"{label} (paper)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_margin_histograms(margins: dict[str, torch.Tensor], eps_max: float, bins: int = 30) -> Figure:
    """Histograms of per-sample margin estimates (Figure 9 style), one panel per method."""
    if not margins:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no run with per-sample margins (IMA, MMA) among these", ha="center")
        return fig
    fig, axes = plt.subplots(1, len(margins), figsize=(4 * len(margins), 3), squeeze=False)
    for ax, (label, values) in zip(axes.flat, margins.items()):
        ax.hist(values.numpy(), bins=bins, range=(0, max(eps_max, float(values.max()))), color="#4c72b0")
        ax.set_title(f"{label}: mean {float(values.mean()):.3f}", fontsize=9)
        ax.set_xlabel("estimated margin")
    axes.flat[0].set_ylabel("training samples")
    fig.tight_layout()
    return fig


def plot_noisy_examples(runs: Sequence[Run], x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float], *,
                        class_names: Sequence[str] = ("non-COVID", "COVID"), clip: tuple[float, float] = (0.0, 1.0),
                        steps: int = 100, seed: int = 0) -> Figure:
    """Figure 10 style: one row per run, a clean image then its 100-PGD noisy versions, titled with predictions."""
    from imalib.attacks import pgd

    fig, axes = plt.subplots(len(runs), len(eps_list), figsize=(2.2 * len(eps_list), 2.4 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        model = run.model.eval()
        for ax, eps in zip(row, eps_list):
            if eps > 0:
                image = pgd(model, x, y, eps, norm="linf", steps=steps, step_size=eps / 10, clip=clip,
                            generator=torch.Generator().manual_seed(seed))
            else:
                image = x
            with torch.no_grad():
                label = int(model(image).argmax(dim=1)[0])
            ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{run.config.label}, eps {eps:g}\n→ {class_names[label]}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig
