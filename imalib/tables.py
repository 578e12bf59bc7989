"""Tables from finished runs and from the paper (pandas only: the CLI and the book share them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from imalib.paper import paper_table

if TYPE_CHECKING:
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


def paper_frame(dataset: str, norm: str) -> pd.DataFrame:
    """The paper's reported accuracies for (dataset, norm): rows are method labels, columns noise levels."""
    table = paper_table(dataset, norm)
    return pd.DataFrame.from_dict({row.label: row.reported for row in table.rows}, orient="index",
                                  columns=list(table.eps))
