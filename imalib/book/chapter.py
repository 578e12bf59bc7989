"""What the image-dataset chapters share: one paper table reproduced at a profile, glued into the book."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imalib import tables
from imalib.book.glue import glue_figure, glue_table, glue_text
from imalib.book.plots import placeholder, plot_accuracy_curves, plot_margin_histograms
from imalib.data import DataError, load_splits
from imalib.experiments import available
from imalib.io import load_torch
from imalib.paper import WHITE_NOISE_ERROR_RATE, paper_table
from imalib.profiles import SCALES, table_configs
from imalib.runs import Run


def load_margins(run: Run) -> torch.Tensor | None:
    """The run's final per-sample margin estimates (IMA, MMA), read from ``margins.pt``; None for other methods."""
    file = Path(run.path) / "margins.pt"
    return load_torch(file) if file.exists() else None


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
                  train_missing: bool, workers: int = 1, device: str = "auto", seed: int = 0,
                  data_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reproduce the paper's table for (dataset, norm) and glue it under the prefix '<dataset>_<norm>_'.

    Glued names: ``caption``, ``status``, ``ours``, ``side``, ``curves``, ``hist``, ``standing``,
    ``missing``, ``rises``. Returns the runs and what is missing.
    """
    key = f"{dataset}_{norm}_"
    number = paper_table(dataset, norm).number
    glue_text(key + "caption", scale_caption(dataset, profile))
    glue_text(key + "table", f"Table {number}")
    configs = table_configs(dataset, norm, profile, seed=seed, data_params=data_params)
    absent = data_status(dataset, data_root, data_params)
    if absent is not None and train_missing:
        train_missing = False
    runs, missing = available(configs, results_root=results_root, data_root=data_root, device=device,
                              workers=workers, train_missing=train_missing)
    paper = tables.paper_frame(dataset, norm)
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
            glue_figure(key + name, placeholder("no result records yet"))
        return {"runs": [], "missing": missing}
    order = [label for label in paper_table(dataset, norm).labels if any(r.config.label == label for r in runs)]
    frame = tables.results_frame(runs)
    mean = tables.mean_table(frame, order=order)
    n_test = runs[0].record.n_test
    glue_text(key + "status", f"{len(runs)} of {len(configs)} rows measured at profile `{profile}` "
                              f"on {n_test} test images (seed {seed}, one training run per row). With {n_test} "
                              f"test images an accuracy carries a binomial standard error of up to "
                              f"{0.5 / np.sqrt(n_test):.3f}; differences smaller than about twice that are "
                              f"not resolved at this scale.")
    glue_table(key + "ours", mean.round(4), index_name="method (ours)")
    glue_table(key + "side", tables.side_by_side(mean, paper), index_name="method")
    glue_text(key + "rises", int(frame["rises"].sum()))
    fig = plot_accuracy_curves(mean, paper, title=f"{dataset}, {norm}, profile {profile}",
                                      xlabel=f"noise level ({norm})")
    glue_figure(key + "curves", fig)
    stored = {r.config.label: load_margins(r) for r in runs}
    margins = {label: values for label, values in stored.items() if values is not None}
    if margins:
        ima = [r for r in runs if r.config.label == "ima"]
        fig = plot_margin_histograms(margins, ima[0].config.eps if ima else max(r.config.eps for r in runs))
    else:
        fig = placeholder("no IMA or MMA run yet")
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


def white_noise_section(runs: list[Run], absent: str | None, data_root: str | Path | None) -> dict[str, Any]:
    """Appendix B on the COVID-19 table's runs: the ``ce`` model's white-noise error rate and Figure 10.

    Returns the glue values ``covid_white`` (text) and ``covid_examples`` (figure).
    """
    from imalib.noise import white_noise_error_rate

    ce = [r for r in runs if r.config.label == "ce"]
    if not (ce and absent is None and all(r.has_weights for r in runs)):
        return {"covid_white": f"not measured: no `ce` record on real data yet (the paper reports {WHITE_NOISE_ERROR_RATE:g})",
                "covid_examples": placeholder("needs the real CT images")}
    config = ce[0].config
    splits = load_splits("covid", root=data_root, n_train=config.n_train, n_test=config.n_test, seed=config.seed,
                         params=dict(config.data_params))
    rate = white_noise_error_rate(ce[0].model, splits.test.inputs(), splits.test.y, level=0.05, repeats=10)
    shown = [r for r in runs if r.config.label in ("ima", "mma", "adv0.1", "ce")]
    x, y = splits.test.inputs()[:1], splits.test.y[:1]
    from imalib.book.plots import plot_noisy_examples

    return {"covid_white": f"{rate:.4f} (ours, 10 noise draws per test image) against the paper's {WHITE_NOISE_ERROR_RATE:g}",
            "covid_examples": plot_noisy_examples(shown, x, y, [0.0, 0.05, 0.1, 0.2, 0.3])}


def run_costs(results_root: str | Path) -> pd.DataFrame | str:
    """Mean wall time per (dataset, norm, profile, method) over the result records under ``results_root``."""
    import json

    rows = []
    for path in sorted(Path(results_root).glob("*/*/result.json")):
        r = json.loads(path.read_text())
        rows.append({"dataset": r["dataset"], "norm": r["norm"], "profile": r["profile"], "method": r["label"],
                     "seed": r["seed"], "train min": r["train_seconds"] / 60, "eval min": r["eval_seconds"] / 60,
                     "threads": r["environment"]["torch_threads"], "device": r["environment"]["cuda"] or "cpu"})
    frame = pd.DataFrame(rows)
    if not len(frame):
        return "no result records yet"
    return frame.groupby(["dataset", "norm", "profile", "method"]).agg(
        runs=("seed", "count"), train_min=("train min", "mean"), eval_min=("eval min", "mean"),
        device=("device", "first"), threads=("threads", "first")).round(2)


def benchmark_table(folder: str | Path) -> pd.DataFrame | str:
    """One row per benchmark record (``*.json``) in ``folder``: what it measured, its target and its command."""
    import json

    bench = []
    for path in sorted(Path(folder).glob("*.json")):
        b = json.loads(path.read_text())
        bench.append({"benchmark": b["name"], "measured": b["summary"], "target": b.get("target", ""),
                      "command": f"`{b['command']}`"})
    if not bench:
        return "no benchmark records yet: run `make bench`"
    return pd.DataFrame(bench).set_index("benchmark")
