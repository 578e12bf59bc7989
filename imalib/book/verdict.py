"""The numbers behind the book's verdict page: one small summary per claim of the paper, read from records.

The verdict sentences are written by a person in ``notebooks/verdict.md``; the functions here only collect
the values those sentences quote and the conditions their check cells assert. Everything is read from the
committed result records (:func:`imalib.records.collect`) and the Moons analysis caches; nothing trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from imalib import tables
from imalib.book import moons
from imalib.book.findings import resolved, resolved_over_seeds, seed_words, standard_error
from imalib.records import ResultRecord, collect


# ------------------------------------------------------------------------------------------------ Moons
@dataclass(frozen=True)
class MoonsVerdict:
    """Moons at the noise level the baselines pin down: mean accuracy at ``eps`` under PGD and exactly."""

    noise: float
    at_edge: bool
    eps: float
    pgd: pd.Series  # label -> mean over seeds, the paper's PGD
    pgd_sd: pd.Series
    exact: pd.Series  # label -> mean over seeds, exact robust accuracy
    seeds: int


def moons_verdict(
    results_root: str, seeds: Sequence[int], noise_levels: Sequence[float], eps: float = 0.3
) -> MoonsVerdict:
    """The Moons chapter's headline, recomputed from the records (the same functions the chapter uses)."""
    sweep, _ = moons.sweep_runs("cpu", seeds, None, noise_levels, results_root=results_root, train_missing=False)
    inferred, _ = moons.noise_inference(sweep, seeds)
    runs = [r for r in sweep if moons.noise_of(r) == inferred.best]
    rows = []
    for run in runs:
        exact = moons.cached_analysis(run, "exact")
        rows.append(
            {
                "label": run.config.label,
                "seed": run.config.seed,
                "pgd": run.record.accuracy_at(eps),
                "exact": dict(zip(exact["eps"], exact["accuracy"], strict=False))[eps],
            }
        )
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("label")
    return MoonsVerdict(
        inferred.best,
        inferred.at_edge,
        eps,
        grouped["pgd"].mean(),
        grouped["pgd"].std(ddof=1),
        grouped["exact"].mean(),
        int(grouped["seed"].nunique().min()),
    )


# ------------------------------------------------------------------------------------------ image tables
@dataclass(frozen=True)
class ImageVerdict:
    """One image table at one profile: accuracy per (label, eps), the test-set size and the largest SE."""

    accuracy: pd.DataFrame  # rows labels, columns eps: the mean over the row's seeds
    n_test: int
    seeds: int  # the fewest seeds of any row
    max_se: float
    sd: pd.DataFrame | None = None  # sample sd over seeds, same shape (0 with one seed)
    n_seeds: pd.Series | None = None  # label -> number of seeds

    def _resolved(self, a: str, b: str, eps: float) -> bool:
        x, y = float(self.accuracy.loc[a, eps]), float(self.accuracy.loc[b, eps])
        if self.sd is None or self.n_seeds is None:
            return resolved(x, y, self.n_test)
        return resolved_over_seeds(
            x,
            y,
            self.n_test,
            sd_a=float(self.sd.loc[a, eps]),
            seeds_a=int(self.n_seeds[a]),
            sd_b=float(self.sd.loc[b, eps]),
            seeds_b=int(self.n_seeds[b]),
        )

    def resolved_above(self, a: str, b: str, eps: float) -> bool:
        """``a`` above ``b`` at ``eps`` by more than two combined standard errors (binomial, and of the seed
        means where both rows have two or more seeds)."""
        return float(self.accuracy.loc[a, eps]) > float(self.accuracy.loc[b, eps]) and self._resolved(a, b, eps)

    def seed_text(self) -> str:
        """How many training seeds the rows have, in words."""
        counts = self.n_seeds if self.n_seeds is not None else pd.Series(self.seeds, index=self.accuracy.index)
        return seed_words({str(label): int(count) for label, count in counts.items()})

    def resolved_eps(self, a: str, b: str) -> list[float]:
        """The attacked eps (> 0) at which ``a`` is resolved above ``b``."""
        return [e for e in self.accuracy.columns if e > 0 and self.resolved_above(a, b, e)]

    def unresolved_eps(self, a: str, b: str) -> list[float]:
        """The attacked eps at which ``a`` and ``b`` differ by at most two combined standard errors."""
        return [e for e in self.accuracy.columns if e > 0 and not self._resolved(a, b, e)]


def image_verdict(
    results_root: str, dataset: str, norm: str, profile: str = "cpu", attack: str = "pgd"
) -> ImageVerdict | None:
    """The records of one image table (None when there are none: not tested here).

    ``attack="pgd"``: the paper's protocol; ``attack="worst_of_both"``: per image the
    worst of PGD and AutoAttack, over the records that have AutoAttack (None when none has).
    """
    if attack not in ("pgd", "worst_of_both"):
        raise ValueError(f"attack={attack!r}: use 'pgd' or 'worst_of_both'")
    records: list[ResultRecord] = collect(results_root, dataset=dataset, norm=norm, profile=profile)
    if attack == "worst_of_both":
        records = [r for r in records if r.autoattack is not None]
    if not records:
        return None
    rows = [
        {"label": r.label, "seed": r.seed, "eps": e, "accuracy": a}
        for r in records
        for e, a in zip(
            r.eps, r.accuracy if attack == "pgd" or r.autoattack is None else r.autoattack.worst_of_both, strict=False
        )
    ]
    frame = pd.DataFrame(rows)
    accuracy = frame.pivot_table(index="label", columns="eps", values="accuracy", aggfunc="mean")
    sd = tables.std_table(frame)  # 0 for a one-seed row, which then gets the binomial test alone
    n_seeds = frame.groupby("label")["seed"].nunique()
    n_test = min(r.n_test for r in records)
    return ImageVerdict(
        accuracy,
        n_test,
        int(n_seeds.min()),
        standard_error(0.5, n_test),
        sd.reindex(index=accuracy.index, columns=accuracy.columns),
        n_seeds.reindex(accuracy.index),
    )


def pair_eps(table: ImageVerdict | None, a: str, b: str, *, unresolved: bool = False) -> str:
    """The eps at which ``a`` is resolved above ``b`` in ``table`` (``unresolved=True``: not resolved),
    formatted; 'not measured yet' when the table is None or lacks either row."""
    if table is None or a not in table.accuracy.index or b not in table.accuracy.index:
        return "not measured yet"
    return fmt_eps(table.unresolved_eps(a, b) if unresolved else table.resolved_eps(a, b))


def calibration_below_cap(results_root: str, seeds: Sequence[int], noise: float = 0.1) -> pd.DataFrame:
    """Per method (IMA, MMA): on the training points whose exact distance is below IMA's cap (eps_max), the
    median stored / exact margin and the share overestimated by more than 10 %, pooled over seeds."""
    runs, _ = moons.table_runs("cpu", seeds, ["ima", "mma"], noise, results_root=results_root, train_missing=False)
    return moons.calibration_below_cap(runs)


def fmt_eps(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values) if len(values) else "none"


def fmt(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if np.isfinite(float(value)) else "n/a"
