"""What the image-dataset chapters share: one paper table reproduced at a profile, glued into the book."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imalib import report
from imalib.book import glue_figure, glue_table, glue_text
from imalib.data import DataError, load_splits
from imalib.experiments import available
from imalib.paper_tables import TABLE_NUMBER, paper_table
from imalib.profiles import SCALES, TABLE_ROWS, table_configs


def data_status(dataset: str, data_root: str | Path | None, data_params: dict[str, Any] | None = None) -> str | None:
    """None when the dataset loads from the data root, else the loader's message (what is missing, how to get it)."""
    try:
        load_splits(dataset, root=data_root, n_train=8, n_test=8, params=data_params)
    except DataError as error:
        return str(error)
    return None


def scale_caption(dataset: str, profile: str) -> str:
    scale = SCALES[(dataset, profile)]
    train = "the full training set" if scale.n_train is None else f"{scale.n_train} training images"
    test = "the full test set" if scale.n_test is None else f"{scale.n_test} test images"
    return (f"profile `{profile}`: {scale.epochs} epochs, batch {scale.batch_size}, {train}, {test}, "
            f"{scale.eval_steps}-step PGD")


def table_section(dataset: str, norm: str, profile: str, *, results_root: str | Path, data_root: str | Path | None,
                  train_missing: bool, workers: int = 1, device: str = "cpu", seed: int = 0,
                  data_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reproduce the paper's table for (dataset, norm) and glue it under the prefix '<dataset>_<norm>_'.

    Glued names: ``caption``, ``status``, ``ours``, ``side``, ``curves``, ``hist``, ``standing``,
    ``missing``, ``rises``. Returns the runs and what is missing.
    """
    key = f"{dataset}_{norm}_"
    number = TABLE_NUMBER[(dataset, norm)]
    glue_text(key + "caption", scale_caption(dataset, profile))
    glue_text(key + "table", f"Table {number}")
    configs = table_configs(dataset, norm, profile, seed=seed, data_params=data_params)
    absent = data_status(dataset, data_root, data_params)
    if absent is not None and train_missing:
        train_missing = False
    runs, missing = available(configs, results_root=results_root, data_root=data_root, device=device,
                              workers=workers, train_missing=train_missing)
    paper = paper_table(dataset, norm)
    glue_table(key + "paper", paper, index_name="method (paper)")
    glue_text(key + "missing", "none" if not missing else ", ".join(c.label for c in missing))
    if not runs:
        reason = f"the data is not in the data root ({absent})" if absent else \
            "these runs have not been executed at this profile yet"
        glue_text(key + "status", f"**Not reproduced here yet**: no result record exists for {profile} "
                                  f"({reason}). The paper's numbers are shown alone.")
        for name in ("ours", "side", "standing", "rises"):
            glue_text(key + name, "(no result records)")
        for name in ("curves", "hist"):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no result records yet", ha="center")
            glue_figure(key + name, fig)
        return {"runs": [], "missing": missing}
    order = [f"{m}{e:g}" if m in ("adv", "rand") else m for m, e in TABLE_ROWS[(dataset, norm)]]
    order = [label for label in order if any(r.config.label == label for r in runs)]
    frame = report.results_frame(runs)
    mean = report.mean_table(frame, order=order)
    n_test = runs[0].result["n_test"]
    glue_text(key + "status", f"{len(runs)} of {len(configs)} rows measured at profile `{profile}` "
                              f"on {n_test} test images (seed {seed}, one training run per row). With {n_test} "
                              f"test images an accuracy carries a binomial standard error of up to "
                              f"{0.5 / np.sqrt(n_test):.3f}; differences smaller than about twice that are "
                              f"not resolved at this scale.")
    glue_table(key + "ours", mean.round(4), index_name="method (ours)")
    glue_table(key + "side", report.side_by_side(mean, paper), index_name="method")
    glue_text(key + "rises", int(frame["rises"].sum()))
    fig = report.plot_accuracy_curves(mean, paper, title=f"{dataset}, {norm}, profile {profile}",
                                      xlabel=f"noise level ({norm})")
    glue_figure(key + "curves", fig)
    margins = {r.config.label: r.margins for r in runs if r.margins is not None}
    if margins:
        ima = [r for r in runs if r.config.label == "ima"]
        fig = report.plot_margin_histograms(margins, ima[0].config.eps if ima else max(r.config.eps for r in runs))
    else:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no IMA or MMA run yet", ha="center")
    glue_figure(key + "hist", fig)
    statements = []
    if "ima" in mean.index:
        for other in mean.index:
            if other == "ima":
                continue
            wins = int((mean.loc["ima"].iloc[1:] > mean.loc[other].iloc[1:]).sum())
            statements.append(f"IMA is above {other} at {wins} of {mean.shape[1] - 1} noise levels "
                              f"(clean: IMA {mean.loc['ima'].iloc[0]:.3f}, {other} {mean.loc[other].iloc[0]:.3f}; "
                              f"area under the curve: IMA {np.trapezoid(mean.loc['ima'], mean.columns):.4f}, "
                              f"{other} {np.trapezoid(mean.loc[other], mean.columns):.4f})")
    glue_text(key + "standing", "; ".join(statements) if statements else "IMA has not been run at this profile yet")
    return {"runs": runs, "missing": missing, "mean": mean}
