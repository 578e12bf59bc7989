"""Tables from finished runs and from the paper (pandas only: the CLI and the book share them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from imalib.errors import ConfigError
from imalib.paper import paper_table

if TYPE_CHECKING:
    from imalib.records import ResultRecord
    from imalib.runs import Run


def results_frame(runs: Iterable[Run], column: str = "accuracy") -> pd.DataFrame:
    """Long table: one row per (run, eps) with label, seed, data parameters and the chosen column."""
    rows = []
    for run in runs:
        config, record = run.config, run.record
        extra = {f"data_{k}": v for k, v in config.data_params}
        extra.update({f"param_{k}": v for k, v in config.method_params})
        for eps, value, envelope, rises in zip(record.eps, getattr(record, column), record.envelope, record.rises):
            rows.append(
                {
                    "label": config.label,
                    "seed": config.seed,
                    "profile": config.profile,
                    "eps": eps,
                    "accuracy": value,
                    "envelope": envelope,
                    "rises": rises,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def mean_table(frame: pd.DataFrame, value: str = "accuracy", order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over seeds: rows are labels, columns eps."""
    table = frame.pivot_table(index="label", columns="eps", values=value, aggfunc="mean")
    return table.reindex(order) if order is not None else table


def std_table(frame: pd.DataFrame, value: str = "accuracy", order: Sequence[str] | None = None) -> pd.DataFrame:
    """Sample standard deviation over seeds (0 for a single seed)."""
    table = frame.pivot_table(
        index="label", columns="eps", values=value, aggfunc=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    )
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
        cells[e] = [
            f"{ours.loc[lab, e]:.{digits}f} / {paper.loc[lab, e]:.{digits}f} "
            f"({ours.loc[lab, e] - paper.loc[lab, e]:+.{digits}f})"
            for lab in labels
        ]
    return pd.DataFrame(cells, index=labels)


def difference(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """ours - paper for the common labels and eps."""
    labels = [label for label in ours.index if label in paper.index]
    eps = [e for e in ours.columns if e in paper.columns]
    return ours.loc[labels, eps] - paper.loc[labels, eps]


def paper_frame(dataset: str, norm: str) -> pd.DataFrame:
    """The paper's reported accuracies for (dataset, norm): rows are method labels, columns noise levels."""
    table = paper_table(dataset, norm)
    return pd.DataFrame.from_dict(
        {row.label: row.reported for row in table.rows}, orient="index", columns=list(table.eps)
    )


def _row_order(dataset: str, norm: str, label: str) -> tuple[int, str]:
    from imalib.profiles import table_configs

    try:
        labels = [row.label for row in table_configs(dataset, norm, "smoke")]
    except ConfigError:  # no paper table for this pair: alphabetical
        labels = []
    return (labels.index(label) if label in labels else len(labels), label)


def report_tables(records: Sequence[ResultRecord]) -> list[tuple[str, pd.DataFrame]]:
    """One (caption, table) per (dataset, norm, profile): methods as rows, eps as columns, accuracy in %.

    A value marked ``*`` is higher than the one at the previous eps (a sign of
    gradient masking). Two records with the same label (other seeds or
    parameters) get their seed and config hash appended to the row name.
    """
    groups: dict[tuple[str, str, str], list[ResultRecord]] = {}
    for record in records:
        groups.setdefault((record.dataset, record.norm, record.profile), []).append(record)
    tables = []
    for (dataset, norm, profile), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: (_row_order(dataset, norm, r.label), r.seed))
        labels = [r.label for r in group]
        rows: dict[str, dict[str, str]] = {}
        for record in group:
            name = record.label
            if labels.count(name) > 1:
                name = f"{name} (seed {record.seed}, {record.config_hash[:6]})"
            rows[name] = {
                f"{eps:g}": f"{100 * acc:.1f}" + ("*" if rise else "")
                for eps, acc, rise in zip(record.eps, record.accuracy, record.rises)
            }
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame = frame[sorted(frame.columns, key=float)].fillna("")
        frame.index.name = "method"
        n_tests = sorted({r.n_test for r in group}, key=str)
        steps = sorted({r.config.eval_steps for r in group}, key=str)
        caption = (
            f"{dataset} / {norm}: robust accuracy (%) by eps; profile {profile}, "
            f"n_test {'/'.join(map(str, n_tests))}, PGD steps {'/'.join(map(str, steps))}"
        )
        if any("*" in value for row in rows.values() for value in row.values()):
            caption += " (* = higher than at the previous eps: gradient masking?)"
        tables.append((caption, frame))
    return tables
