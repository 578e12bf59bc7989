"""What the image-dataset chapters share: one paper table reproduced at a profile, glued into the book."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imalib import tables
from imalib.book.findings import resolved_over_seeds, seed_words, standard_error
from imalib.book.glue import glue_figure, glue_table, glue_text
from imalib.book.plots import (
    placeholder,
    plot_accuracy_curves,
    plot_margin_histograms,
    plot_paper_curves,
)
from imalib.config import RunConfig
from imalib.data import DataError, load_splits
from imalib.data.base import data_root as resolve_data_root
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
    """None when the dataset loads from the data root, else the loader's message (what is missing, how to get it).

    The data root's own path is written as ``$IMALIB_DATA_ROOT`` so that no machine's path reaches the book.
    """
    try:
        load_splits(dataset, root=data_root, n_train=8, n_test=8, params=data_params)
    except DataError as error:
        return without_root(str(error), data_root)
    return None


def without_root(text: str, data_root: str | Path | None) -> str:
    """``text`` with the data root's path (absolute or as given) and the loaders' ``<data root>`` placeholder
    written as ``$IMALIB_DATA_ROOT``: no machine's path reaches the book, and Markdown sees no HTML tag."""
    root = resolve_data_root(data_root)
    for form in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
        if form not in (".", ""):
            text = text.replace(form, "$IMALIB_DATA_ROOT")
    return text.replace("<data root>", "$IMALIB_DATA_ROOT").replace("<", "&lt;")


def rising_rows(dataset: str, norm: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """The paper's rows whose reported accuracy rises from one noise level to the next (a sign of masking).

    label -> [(eps before, eps after, accuracy before, accuracy after), ...], in the table's row order.
    """
    table = paper_table(dataset, norm)
    rising: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in table.rows:
        steps = [
            (table.eps[k], table.eps[k + 1], row.reported[k], row.reported[k + 1])
            for k in range(len(table.eps) - 1)
            if row.reported[k + 1] > row.reported[k]
        ]
        if steps:
            rising[row.label] = steps
    return rising


def rising_text(dataset: str, norm: str) -> str:
    """The paper's rising rows in words: 'trades (0.0371 at 0.04 → 0.0827 at 0.06, ...)', or 'none'."""
    rising = rising_rows(dataset, norm)
    if not rising:
        return "none"
    parts = []
    for label, steps in rising.items():
        shown = ", ".join(f"{a:.4g} at {e0:g} → {b:.4g} at {e1:g}" for e0, e1, a, b in steps)
        parts.append(f"`{label}` ({shown})")
    return "; ".join(parts)


def scale_caption(dataset: str, profile: str) -> str:
    scale = SCALES[(dataset, profile)]
    train = "the full training set" if scale.n_train is None else f"{scale.n_train} training images"
    test = "the full test set" if scale.n_test is None else f"{scale.n_test} test images"
    return (
        f"profile `{profile}`: {scale.epochs} epochs, batch {scale.batch_size}, {train}, {test}, "
        f"{scale.eval_steps}-step PGD for evaluation"
    )


def table_section(
    dataset: str,
    norm: str,
    profile: str,
    *,
    results_root: str | Path,
    data_root: str | Path | None,
    train_missing: bool,
    workers: int = 1,
    device: str = "auto",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    data_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reproduce the paper's table for (dataset, norm) and glue it under the prefix '<dataset>_<norm>_'.

    ``seeds`` (default: ``[seed]``) are the training seeds of every row; the tables show the mean over the
    seeds measured, and 'mean ± sd (seeds)' where a row has two or more. Glued names: ``caption``,
    ``status``, ``ours``, ``side``, ``curves``, ``hist``, ``steps``, ``paper_rising``, ``missing``, ``rises``.
    Returns the runs, what is missing, and (with runs) ``mean``, ``sd``, ``n_seeds`` and ``n_test``.
    """
    seeds = [seed] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: give one or more distinct training seeds, e.g. [0, 1, 2]")
    key = f"{dataset}_{norm}_"
    number = paper_table(dataset, norm).number
    glue_text(key + "caption", scale_caption(dataset, profile))
    glue_text(key + "table", f"Table {number}")
    glue_text(key + "steps", f"{SCALES[(dataset, profile)].eval_steps}-step")
    glue_text(key + "paper_rising", rising_text(dataset, norm))
    configs = [c for s in seeds for c in table_configs(dataset, norm, profile, seed=s, data_params=data_params)]
    absent = data_status(dataset, data_root, data_params)
    if absent is not None and train_missing:
        train_missing = False
    runs, missing = available(
        configs,
        results_root=results_root,
        data_root=data_root,
        device=device,
        workers=workers,
        train_missing=train_missing,
    )
    paper = tables.paper_frame(dataset, norm)
    glue_table(key + "paper", paper, index_name="method (paper)")
    glue_text(key + "missing", missing_text(missing, several=len(seeds) > 1))
    if not runs:
        reason = (
            f"the data is not in the data root ({absent})"
            if absent
            else "these runs have not been executed at this profile yet"
        )
        glue_text(
            key + "status",
            f"**Not reproduced here yet**: no result record exists for {profile} "
            f"({reason}). The paper's numbers are shown alone.",
        )
        for name in ("ours", "side", "rises"):
            glue_text(key + name, "(no result records)")
        glue_figure(
            key + "curves",
            plot_paper_curves(
                paper, title=f"{dataset}, {norm}: the paper's Table {number}", xlabel=f"noise level ({norm})"
            ),
        )
        glue_text(key + "hist", "No IMA or MMA run exists here, so there are no margins to show.")
        return {"runs": [], "missing": missing}
    order = [label for label in paper_table(dataset, norm).labels if any(r.config.label == label for r in runs)]
    frame = tables.results_frame(runs)
    mean = tables.mean_table(frame, order=order)
    sd = tables.std_table(frame, order=order)
    n_seeds = frame.groupby("label")["seed"].nunique().reindex(order)
    seed_status = (
        f"seed {seeds[0]}, one training run per row"
        if len(seeds) == 1
        else f"seeds {', '.join(map(str, seeds))}: {seed_counts(n_seeds)}; a cell is the mean over a row's seeds"
    )
    n_test = runs[0].record.n_test
    glue_text(
        key + "status",
        f"{len(runs)} of {len(configs)} {'rows' if len(seeds) == 1 else 'runs'} measured at profile "
        f"`{profile}` on {n_test} test images ({seed_status}). With {n_test} "
        f"test images an accuracy carries a binomial standard error of up to "
        f"{0.5 / np.sqrt(n_test):.3f}; differences smaller than about twice that are "
        f"not resolved at this scale.",
    )
    if int(n_seeds.max()) > 1:
        shown = tables.mean_std_text(mean, sd).astype(object)
        for label in order:
            if n_seeds[label] < 2:
                shown.loc[label] = [f"{v:.3f}" for v in mean.loc[label]]
        shown.insert(0, "seeds", [int(n_seeds[label]) for label in order])
        glue_table(key + "ours", shown, index_name="method (ours; mean ± sd over seeds)")
    else:
        glue_table(key + "ours", mean.round(3), index_name="method (ours)")
    glue_table(key + "side", tables.side_by_side(mean, paper), index_name="method")
    glue_text(key + "rises", int(frame["rises"].sum()))
    fig = plot_accuracy_curves(
        mean, paper, title=f"{dataset}, {norm}, profile {profile}", xlabel=f"noise level ({norm})"
    )
    glue_figure(key + "curves", fig)
    stored = {r.config.label: load_margins(r) for r in runs if r.config.seed == seeds[0]}
    margins = {label: values for label, values in stored.items() if values is not None}
    if margins:
        ima = [r for r in runs if r.config.label == "ima"]
        fig = plot_margin_histograms(margins, ima[0].config.eps if ima else max(r.config.eps for r in runs))
    else:
        fig = placeholder("no IMA or MMA run yet")
    glue_figure(key + "hist", fig)
    return {"runs": runs, "missing": missing, "mean": mean, "sd": sd, "n_seeds": n_seeds, "n_test": n_test}


def rows_resolved(section: dict[str, Any], a: str, b: str, eps: float) -> bool:
    """Whether rows ``a`` and ``b`` of a :func:`table_section` differ at ``eps`` beyond the resolution: two
    binomial standard errors at its test size and, where both rows have two or more seeds, two standard
    errors of the difference of their seed means (:func:`imalib.book.findings.resolved_over_seeds`)."""
    mean, sd, seeds = section["mean"], section["sd"], section["n_seeds"]
    return resolved_over_seeds(
        float(mean.loc[a, eps]),
        float(mean.loc[b, eps]),
        int(section["n_test"]),
        sd_a=float(sd.loc[a, eps]),
        seeds_a=int(seeds[a]),
        sd_b=float(sd.loc[b, eps]),
        seeds_b=int(seeds[b]),
    )


def seed_spread(section: dict[str, Any]) -> dict[str, Any]:
    """The training-seed spread of a :func:`table_section`, over its rows with two or more seeds, at eps > 0.

    Keys: ``rows`` (those labels), ``cells`` ((label, eps) pairs), ``max_sd`` with its ``label`` and ``eps``,
    ``se_there`` (the binomial standard error of that cell's mean at the table's test size), and ``above_se``
    (how many cells have a seed sd larger than their binomial SE). Empty rows: NaN and zeros.
    """
    if "n_seeds" not in section:  # a table without runs
        section = {"n_seeds": pd.Series(dtype=int), "sd": pd.DataFrame(), "mean": pd.DataFrame(), "n_test": 1}
    counts, sd, mean, n = section["n_seeds"], section["sd"], section["mean"], int(section["n_test"])
    rows = [str(label) for label in counts.index if int(counts[label]) >= 2]
    eps = [e for e in sd.columns if e > 0]
    cells = [(label, e) for label in rows for e in eps]
    if not cells:
        return {
            "rows": [],
            "cells": 0,
            "max_sd": float("nan"),
            "label": "",
            "eps": float("nan"),
            "se_there": float("nan"),
            "above_se": 0,
        }
    label, e = max(cells, key=lambda cell: float(sd.loc[cell[0], cell[1]]))
    return {
        "rows": rows,
        "cells": len(cells),
        "max_sd": float(sd.loc[label, e]),
        "label": label,
        "eps": float(e),
        "se_there": standard_error(float(mean.loc[label, e]), n),
        "above_se": sum(float(sd.loc[a, b]) > standard_error(float(mean.loc[a, b]), n) for a, b in cells),
    }


def seed_counts(n_seeds: pd.Series) -> str:
    """How many training seeds the rows of a :func:`table_section` have, in words (``n_seeds``: label -> count)."""
    return seed_words({str(label): int(count) for label, count in n_seeds.items()}, code=True)


def missing_text(missing: Sequence[RunConfig], *, several: bool) -> str:
    """The rows without a finished run ('none'); with several seeds, each row's missing seeds."""
    if not missing:
        return "none"
    if not several:
        return ", ".join(c.label for c in missing)
    by_label: dict[str, list[int]] = {}
    for c in missing:
        by_label.setdefault(c.label, []).append(c.seed)
    return ", ".join(
        f"{label} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})" for label, s in by_label.items()
    )


def white_noise_section(runs: list[Run], absent: str | None, data_root: str | Path | None) -> dict[str, Any]:
    """Appendix B on the COVID-19 table's runs: the ``ce`` model's white-noise error rate and Figure 10.

    Returns the glue values ``covid_white`` (text) and ``covid_examples`` (figure).
    """
    from imalib.noise import white_noise_error_rate

    ce = [r for r in runs if r.config.label == "ce"]
    if not (ce and absent is None and all(r.has_weights for r in runs)):
        return {
            "covid_white": "not measured: no `ce` record on real data yet "
            f"(the paper reports {WHITE_NOISE_ERROR_RATE:g})",
            "covid_examples": "Not drawn: the examples need the real CT images and the trained models.",
        }
    config = ce[0].config
    splits = load_splits(
        "covid",
        root=data_root,
        n_train=config.n_train,
        n_test=config.n_test,
        seed=config.seed,
        params=dict(config.data_params),
    )
    rate = white_noise_error_rate(ce[0].model, splits.test.inputs(), splits.test.y, level=0.05, repeats=10)
    shown = [r for r in runs if r.config.label in ("ima", "mma", "adv0.1", "ce")]
    x, y = splits.test.inputs()[:1], splits.test.y[:1]
    from imalib.book.plots import plot_noisy_examples

    return {
        "covid_white": f"{rate:.4f} (ours, 10 noise draws per test image) "
        f"against the paper's {WHITE_NOISE_ERROR_RATE:g}",
        "covid_examples": plot_noisy_examples(shown, x, y, [0.0, 0.05, 0.1, 0.2, 0.3]),
    }


def _cost_rows(results_root: str | Path) -> pd.DataFrame:
    import json

    rows = []
    for path in sorted(Path(results_root).glob("*/*/result.json")):
        r = json.loads(path.read_text())
        rows.append(
            {
                "dataset": r["dataset"],
                "norm": r["norm"],
                "profile": r["profile"],
                "method": r["label"],
                "seed": r["seed"],
                "train_seconds": r["train_seconds"],
                "eval_seconds": r["eval_seconds"],
                "autoattack_seconds": (r.get("autoattack") or {}).get("seconds", float("nan")),
                "threads": r["environment"]["torch_threads"],
                "device": r["environment"]["cuda"] or "cpu",
            }
        )
    return pd.DataFrame(rows)


def run_costs(results_root: str | Path) -> pd.DataFrame | str:
    """Mean wall time per (dataset, norm, profile, method) over the result records under ``results_root``:
    one row per group, the group's fields as plain columns (no tuples), minutes with two decimals;
    ``autoattack_min`` is AutoAttack's part of the evaluation (NaN where it was not run)."""
    frame = _cost_rows(results_root)
    if not len(frame):
        return "no result records yet"
    grouped = (
        frame.groupby(["dataset", "norm", "profile", "method"], sort=True)
        .agg(
            runs=("seed", "count"),
            train_min=("train_seconds", "mean"),
            eval_min=("eval_seconds", "mean"),
            autoattack_min=("autoattack_seconds", "mean"),
            device=("device", "first"),
            threads=("threads", "first"),
        )
        .reset_index()
    )
    grouped["train_min"] = (grouped["train_min"] / 60).round(2)
    grouped["eval_min"] = (grouped["eval_min"] / 60).round(2)
    grouped["autoattack_min"] = (grouped["autoattack_min"] / 60).round(2)
    return grouped.set_index("dataset")


def cost_totals(results_root: str | Path) -> dict[str, str]:
    """The summed train + eval (+ AutoAttack) time of the committed records, per profile and per dataset at
    the cpu profile.

    Glue values: ``r_total_<profile>`` (hours, all records of that profile), ``r_total_cpu_<dataset>``
    (hours), ``r_records`` (how many records). What re-training every row costs on the recorded machine.
    """
    frame = _cost_rows(results_root)
    values = {"r_records": str(len(frame))}
    if not len(frame):
        return values | {"r_total_cpu": "0 h (no records)"}
    frame["hours"] = (frame["train_seconds"] + frame["eval_seconds"] + frame["autoattack_seconds"].fillna(0)) / 3600
    for profile, group in frame.groupby("profile"):
        values[f"r_total_{profile}"] = f"{group['hours'].sum():.1f} h"
    for dataset, group in frame[frame["profile"] == "cpu"].groupby("dataset"):
        values[f"r_total_cpu_{dataset}"] = f"{group['hours'].sum():.1f} h ({len(group)} runs)"
    return values


def profile_table() -> pd.DataFrame:
    """Every profile's numbers (imalib.profiles.SCALES): one row per (dataset, profile)."""
    rows = [
        {
            "dataset": dataset,
            "profile": profile,
            "epochs": scale.epochs,
            "batch": scale.batch_size,
            "training samples": "all" if scale.n_train is None else scale.n_train,
            "test samples": "all" if scale.n_test is None else scale.n_test,
            "evaluation PGD steps": scale.eval_steps,
            "evaluation batch": scale.eval_batch,
        }
        for (dataset, profile), scale in SCALES.items()
    ]
    return pd.DataFrame(rows).set_index("dataset")


def chapter_parameters(names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Each chapter's papermill parameters as its ``parameters`` cell states them: name, default, comment."""
    import ast

    from imalib.book.execute import NOTEBOOKS, to_notebook

    folder = Path(__file__).resolve().parents[2] / "notebooks"
    rows = []
    for name in names or NOTEBOOKS:
        notebook = to_notebook(folder / f"{name}.md")
        cell = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
        if cell is None:
            continue
        for line in cell.source.splitlines():
            code, _, comment = line.partition("#")
            if "=" not in code:
                continue
            key, _, value = code.partition("=")
            ast.parse(value.strip(), mode="eval")  # a parameter's default is one Python expression
            rows.append(
                {
                    "chapter": name,
                    "parameter": f"`{key.strip()}`",
                    "default": f"`{value.strip()}`",
                    "meaning": comment.strip(),
                }
            )
    return pd.DataFrame(rows).set_index("chapter")
