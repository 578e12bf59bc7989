"""The measurements behind the paper's smaller claims, read from records: which eps IMA's margins suggest for
adv, what random-noise augmentation buys, the white-noise error rate, the equilibrium on trained Moons models,
and IMA against MMA on the large test subset.

Pure functions of the committed records (and the Moons analysis caches); nothing here trains. The chapters show
the tables and figures; :mod:`imalib.book.verdict` quotes their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from imalib.book.findings import standard_error
from imalib.io import load_torch
from imalib.profiles import table_labels, variant_configs
from imalib.records import ResultRecord, collect
from imalib.runs import run_dir

MARGIN_RULE = "the median of IMA's final margin estimates, pooled over the training seeds"


# ------------------------------------------------------------------------------------------ margin -> eps
def pooled_margins(results_root: str | Path, dataset: str, norm: str, profile: str, seeds: Sequence[int]) -> Tensor:
    """IMA's final margin estimates (``margins.pt``) of the table's IMA runs over ``seeds``, concatenated."""
    from imalib.profiles import table_configs

    found = []
    for seed in seeds:
        (config,) = table_configs(dataset, norm, profile, seed=seed, methods=["ima"])
        file = run_dir(config, results_root) / "margins.pt"
        if file.exists():
            found.append(load_torch(file).flatten().double())
    if not found:
        raise FileNotFoundError(f"no IMA margins.pt for {dataset}/{norm} at profile {profile} under {results_root}")
    return torch.cat(found)


def suggested_eps(margins: Tensor, digits: int = 2) -> float:
    """The eps IMA's margin distribution suggests by this book's rule (:data:`MARGIN_RULE`), rounded to
    ``digits`` decimals (the paper gives no rule; its COVID-19 chapter reads eps = 0.1 off a histogram)."""
    return round(float(margins.median()), digits)


def margin_quantiles(margins: Tensor, qs: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[float, float]:
    return {float(q): float(margins.quantile(q)) for q in qs}


# ------------------------------------------------------------------------------------------- row tables
@dataclass(frozen=True)
class RowTable:
    """Accuracy per (label, eps): the mean over seeds, the seed sd and count, the test images per run, and
    the area (a run's mean accuracy over the attacked eps) per label."""

    mean: pd.DataFrame
    sd: pd.DataFrame
    seeds: pd.Series
    n_images: int
    area: pd.DataFrame  # per label: the mean over attacked eps of a seed's accuracy; its mean, sd, seeds

    def se(self, label: str, eps: float) -> float:
        """The binomial SE of a cell, a mean over the row's seeds of ``n_images`` images each."""
        return standard_error(float(self.mean.loc[label, eps]), self.n_images * int(self.seeds[label]))


def row_table(records: Sequence[ResultRecord], source: str = "pgd") -> RowTable | None:
    """A :class:`RowTable` of ``records``; ``source``: 'pgd' (the record's PGD), 'worst_of_both', 'large'
    (the large test's PGD) or 'large_worst' (its worst of both). None when no record has the source."""
    rows, n = [], []
    for r in records:
        values: Sequence[float] | None
        if source == "pgd":
            values, eps, count = r.accuracy, r.eps, r.n_test
        elif source == "worst_of_both":
            values, eps, count = (r.autoattack.worst_of_both, r.eps, r.n_test) if r.autoattack else (None, (), 0)
        elif source in ("large", "large_worst"):
            entry = r.large_test
            if entry is None:
                values, eps, count = None, (), 0
            else:
                values = entry.accuracy if source == "large" else entry.worst_of_both
                eps, count = entry.eps, entry.n_images
        else:
            raise ValueError(f"source={source!r}: use pgd, worst_of_both, large or large_worst")
        if values is None:
            continue
        n.append(count)
        rows += [{"label": r.label, "seed": r.seed, "eps": e, "accuracy": a} for e, a in zip(eps, values, strict=True)]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["label"]))
    mean = frame.pivot_table(index="label", columns="eps", values="accuracy", aggfunc="mean").reindex(order)
    sd = frame.pivot_table(
        index="label",
        columns="eps",
        values="accuracy",
        aggfunc=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
    ).reindex(order)
    seeds = frame.groupby("label")["seed"].nunique().reindex(order)
    attacked = frame[frame["eps"] > 0].groupby(["label", "seed"])["accuracy"].mean().reset_index()
    area = attacked.groupby("label")["accuracy"].agg(["mean", "std", "count"]).reindex(order)
    area.columns = ["mean", "sd", "seeds"]
    area["sd"] = area["sd"].fillna(0.0)
    return RowTable(mean, sd, seeds, min(n), area)


def image_records(
    results_root: str | Path, dataset: str, norm: str, profile: str, labels: Sequence[str] | None = None
) -> list[ResultRecord]:
    """The records of one image table (``labels``: the rows kept, in this order; default the paper's table)."""
    keep = list(labels) if labels is not None else table_labels(dataset, norm)
    records = collect(results_root, dataset=dataset, norm=norm, profile=profile)
    return sorted((r for r in records if r.label in keep), key=lambda r: (keep.index(r.label), r.seed))


# --------------------------------------------------------------------------------------- margin -> eps
@dataclass(frozen=True)
class SuggestedEps:
    """adv at the eps IMA's margins suggest, against the table's adv rows (areas: mean over attacked eps)."""

    eps: float
    label: str
    area: float
    area_sd: float
    best: str  # the table's adv row with the largest area
    best_area: float
    tolerance: float  # two SE of the difference of the two rows' seed means
    rows_above: list[str]  # table adv rows whose area exceeds the suggested row's by more than the tolerance
    seeds: int

    @property
    def near_best(self) -> bool:
        return abs(self.area - self.best_area) <= self.tolerance


def suggested_vs_adv(table: RowTable, suggested: str, adv_rows: Sequence[str]) -> SuggestedEps:
    """How the suggested adv row compares with ``adv_rows`` by area (mean robust accuracy over eps > 0)."""
    area = table.area
    best = max(adv_rows, key=lambda a: float(area.loc[a, "mean"]))

    def tolerance(a: str, b: str) -> float:
        return 2.0 * float(
            np.sqrt(area.loc[a, "sd"] ** 2 / area.loc[a, "seeds"] + area.loc[b, "sd"] ** 2 / area.loc[b, "seeds"])
        )

    mine = float(area.loc[suggested, "mean"])
    above = [a for a in adv_rows if float(area.loc[a, "mean"]) - mine > tolerance(a, suggested)]
    return SuggestedEps(
        eps=float(suggested.removeprefix("adv")),
        label=suggested,
        area=mine,
        area_sd=float(area.loc[suggested, "sd"]),
        best=best,
        best_area=float(area.loc[best, "mean"]),
        tolerance=tolerance(best, suggested),
        rows_above=above,
        seeds=int(area.loc[suggested, "seeds"]),
    )


# ---------------------------------------------------------------------------------------------- rand
def rand_labels(levels: Sequence[float] = (0.1, 0.2, 0.3)) -> list[str]:
    return [f"rand{v:g}" for v in levels]


def moons_rand_rows(
    results_root: str | Path,
    seeds: Sequence[int],
    noise: float,
    eps: float = 0.3,
    profile: str = "cpu",
    **train: Any,
) -> pd.DataFrame:
    """Moons at ``noise``: per label (rand rows, ce, adv0.3) the mean over seeds of the PGD and the exact
    accuracy at ``eps``, with the seed sd and count. Reads the analysis caches (exact) of the runs; ``train``
    (train_missing, data_root, device, workers) goes to :func:`imalib.experiments.available` for every row."""
    from imalib.book import moons
    from imalib.experiments import available

    variants = [("rand", v) for v in (0.1, 0.2, 0.3)]
    configs = [
        c
        for s in seeds
        for c in variant_configs("moons", "linf", profile, variants, seed=s, data_params={"noise": noise})
    ]
    where = {"train_missing": False, **train}
    runs, _ = available(configs, results_root=results_root, **where)
    table, _ = moons.table_runs(profile, seeds, ["ce", "adv0.3"], noise, results_root=results_root, **where)
    frame = moons.pgd_exact_rows([*runs, *table], eps)
    order = [*rand_labels(), "ce", "adv0.3"]
    out = frame.groupby("label").agg(
        pgd=("pgd", "mean"), pgd_sd=("pgd", "std"), exact=("exact", "mean"), exact_sd=("exact", "std"),
        seeds=("seed", "nunique"),
    )  # fmt: skip
    return out.reindex([label for label in order if label in out.index])


# --------------------------------------------------------------------------------------- white noise
def white_noise_table(records: Sequence[ResultRecord], value: str = "error_rate") -> pd.DataFrame:
    """Per label: ``value`` ('error_rate' or 'flip_rate') at each noise level, the mean over the seeds whose
    record has a white-noise entry, the clean error, and the number of seeds measured."""
    rows = []
    for r in records:
        if r.white_noise is None:
            continue
        entry = r.white_noise
        values = entry.error_rate if value == "error_rate" else entry.flip_rate
        rows += [{"label": r.label, "seed": r.seed, "level": lv, "value": x, "clean": entry.clean_error}
                 for lv, x in zip(entry.levels, values, strict=True)]  # fmt: skip
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["label"]))
    table = frame.pivot_table(index="label", columns="level", values="value", aggfunc="mean").reindex(order)
    table.insert(0, "clean error", frame.groupby("label")["clean"].mean().reindex(order))
    table["seeds"] = frame.groupby("label")["seed"].nunique().reindex(order)
    return table


def white_noise_figure(table: pd.DataFrame, title: str) -> Any:
    """Error rate against the white-noise level per label (the clean error at level 0)."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.6))
    levels = [c for c in table.columns if isinstance(c, float)]
    for label, row in table.iterrows():
        ax.plot([0.0, *levels], [row["clean error"], *(row[v] for v in levels)], marker="o", label=str(label))
    ax.set_xlabel("white-noise level (uniform in [-level, level] per pixel)")
    ax.set_ylabel("error rate")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------ the equilibrium
def halfway_table(
    results_root: str | Path, seeds: Sequence[int], noise: float, profile: str = "cpu", **train: Any
) -> pd.DataFrame:
    """:func:`imalib.book.equilibrium.balance_summary` of Table 1's rows at ``noise`` over ``seeds``; computes
    (and caches in each run) the ``halfway`` analysis where it is missing. ``train`` (train_missing, data_root,
    device, workers) goes to :func:`imalib.book.moons.table_runs`; FileNotFoundError when no run is there."""
    from imalib.book import moons
    from imalib.book.equilibrium import balance_summary

    where = {"train_missing": False, **train}
    runs, _ = moons.table_runs(profile, seeds, None, noise, results_root=results_root, **where)
    if not runs:
        raise FileNotFoundError(
            f"no Moons Table 1 run at noise {noise:g}, profile {profile}, under {results_root}: "
            "run the Moons chapter first (or pass train_missing=True)"
        )
    return balance_summary({(r.config.label, r.config.seed): moons.cached_analysis(r, "halfway") for r in runs})


# -------------------------------------------------------------------------------- IMA against MMA, large
@dataclass(frozen=True)
class PairAtScale:
    """IMA against MMA at each attacked eps on the large test: above, below or level beyond two SE."""

    n_images: int
    seeds: int
    max_se: float  # the largest binomial SE of a cell (a mean over seeds)
    above: list[float]
    below: list[float]
    level: list[float]
    ima: dict[float, float]
    mma: dict[float, float]


def pair_at_scale(table: RowTable, a: str = "ima", b: str = "mma") -> PairAtScale:
    """Compare rows ``a`` and ``b`` of a large-test table cell by cell: a difference counts when it exceeds
    two combined binomial SE (of the seed means) and, with two or more seeds on each side, two SE of the
    difference of the seed means."""
    attacked = [float(e) for e in table.mean.columns if e > 0]
    above: list[float] = []
    below: list[float] = []
    level: list[float] = []
    for e in attacked:
        x, y = float(table.mean.loc[a, e]), float(table.mean.loc[b, e])
        binomial = 2.0 * float(np.hypot(table.se(a, e), table.se(b, e)))
        seeds_a, seeds_b = int(table.seeds[a]), int(table.seeds[b])
        spread = (
            2.0 * float(np.sqrt(table.sd.loc[a, e] ** 2 / seeds_a + table.sd.loc[b, e] ** 2 / seeds_b))
            if seeds_a > 1 and seeds_b > 1
            else 0.0
        )
        if abs(x - y) > max(binomial, spread):
            (above if x > y else below).append(e)
        else:
            level.append(e)
    cells = [table.se(label, e) for label in (a, b) for e in attacked]
    return PairAtScale(
        n_images=table.n_images,
        seeds=int(min(table.seeds[a], table.seeds[b])),
        max_se=max(cells),
        above=above,
        below=below,
        level=level,
        ima={e: float(table.mean.loc[a, e]) for e in attacked},
        mma={e: float(table.mean.loc[b, e]) for e in attacked},
    )


# ------------------------------------------------------------------------------------- chapter sections
def _cells(table: RowTable, labels: Sequence[str]) -> pd.DataFrame:
    """'mean ± sd' cells per label and eps, and the area column, for the rows of ``labels`` present."""
    keep = [label for label in labels if label in table.mean.index]
    out = table.mean.loc[keep].astype(object).copy()
    for label in keep:
        for eps in table.mean.columns:
            out.loc[label, eps] = f"{table.mean.loc[label, eps]:.3f} ± {table.sd.loc[label, eps]:.3f}"
        out.loc[label, "mean over eps > 0"] = f"{table.area.loc[label, 'mean']:.3f} ± {table.area.loc[label, 'sd']:.3f}"
    out["seeds"] = [int(table.seeds[label]) for label in keep]
    out.index.name = "row"
    return out


def fashion_extra(
    profile: str,
    seeds: Sequence[int],
    *,
    results_root: str | Path,
    data_root: str | Path | None = None,
    train_missing: bool = False,
    workers: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """The Fashion-MNIST chapter's rows beyond Table 2 (rand0.1–0.3, adv at the eps IMA's margins suggest),
    the white-noise test and the large test; returns the glue (trains the extra rows when ``train_missing``,
    once IMA's runs exist to suggest an eps)."""
    from imalib.experiments import available

    glue: dict[str, Any] = {}
    try:
        margins = pooled_margins(results_root, "fashion_mnist", "linf", profile, seeds)
    except FileNotFoundError:
        return {"fm_extra_status": "IMA's L-inf runs are not there yet: run the L-inf table first."}
    eps = suggested_eps(margins)
    q = margin_quantiles(margins)
    rows = [("rand", 0.1), ("rand", 0.2), ("rand", 0.3), ("adv", eps)]
    configs = [c for s in seeds for c in variant_configs("fashion_mnist", "linf", profile, rows, seed=s)]
    _, missing = available(configs, results_root=results_root, data_root=data_root, device=device, workers=workers,
                           train_missing=train_missing)  # fmt: skip
    suggested = f"adv{eps:g}"
    labels = ["ce", *rand_labels(), "adv0.1", suggested, "adv0.2", "adv0.3", "ima", "mma", "trades"]
    records = image_records(results_root, "fashion_mnist", "linf", profile, list(dict.fromkeys(labels)))
    glue["fm_extra_status"] = (
        "All extra rows are measured." if not missing else f"Rows not measured yet: {len(missing)} runs."
    )
    glue["fm_margin_rule"] = (
        f"{MARGIN_RULE}: ε = {eps:g} ({len(margins)} margins; quantiles 0.1, 0.25, 0.5, 0.75, 0.9: "
        + ", ".join(f"{v:.3f}" for v in q.values())
        + ")"
    )
    for src, name in (("pgd", "fm_extra_pgd"), ("worst_of_both", "fm_extra_worst")):
        table = row_table(records, src)
        glue[name] = _cells(table, list(dict.fromkeys(labels))) if table is not None else "not measured"
    noise = white_noise_table(records)
    flips = white_noise_table(records, "flip_rate")
    if len(noise):
        glue["fm_white_noise"] = noise.round(4)
        glue["fm_white_flips"] = flips.round(4)
        glue["fm_white_figure"] = white_noise_figure(noise, "Fashion-MNIST L-inf models, white noise")
    else:
        glue["fm_white_noise"] = glue["fm_white_flips"] = "no model's weights are kept here yet"
    for norm in ("linf", "l2"):
        pair_records = image_records(results_root, "fashion_mnist", norm, profile, ["ima", "mma"])
        large = row_table(pair_records, "large")
        if large is None:
            glue[f"fm_large_{norm}"] = "not measured yet"
            continue
        glue |= large_test_costs(pair_records, norm)
        cells = large.mean.astype(object).copy()
        for label in cells.index:
            for e in cells.columns:
                cells.loc[label, e] = f"{large.mean.loc[label, e]:.3f} ± {large.se(label, e):.3f}"
        cells["seeds"] = [int(large.seeds[label]) for label in cells.index]
        cells.index.name = f"{large.n_images} images per model"
        glue[f"fm_large_{norm}"] = cells
    return glue


def large_test_costs(records: Sequence[ResultRecord], norm: str) -> dict[str, str]:
    """What the large test cost per model (its PGD seconds, from the records) and what AutoAttack on it would
    cost at this CPU's measured rate: the 300-image AutoAttack seconds scaled by the image ratio (an upper
    bound, since the cascade attacks only the images PGD leaves robust)."""
    measured = [r for r in records if r.large_test is not None]
    pgd = [r.large_test.seconds for r in measured if r.large_test is not None]
    scaled = [
        r.autoattack.seconds * r.large_test.n_images / r.autoattack.n_images
        for r in measured
        if r.autoattack is not None and r.large_test is not None
    ]
    out = {f"fm_large_{norm}_models": str(len(measured)), f"fm_large_{norm}_pgd_s": f"{np.mean(pgd):.0f}"}
    out[f"fm_large_{norm}_aa_s"] = f"{np.mean(scaled):.0f}" if scaled else "unknown"
    return out


@dataclass(frozen=True)
class RandGain:
    """The best rand row against ce and adv0.3 (exact accuracy at eps 0.3, seed means): ``share`` is the part
    of adv0.3's gain over ce that the best rand row gains; ``not_above_ce`` the rand rows at or below ce."""

    best: str
    best_exact: float
    ce: float
    adv: float
    share: float
    not_above_ce: list[str]
    ce_pgd: float  # ce's PGD accuracy at eps 0.3, beside its exact one (``ce``)


def rand_gain(table: pd.DataFrame, column: str = "exact") -> RandGain:
    """:class:`RandGain` of a :func:`moons_rand_rows` table (``column``: 'exact' or 'pgd')."""
    values = table[column]
    rands = [r for r in rand_labels() if r in values.index]
    if not rands or not {"ce", "adv0.3"} <= set(values.index):
        raise KeyError(f"the table needs rand rows, ce and adv0.3; it has {list(values.index)}")
    best = max(rands, key=lambda r: float(values[r]))
    ce, adv = float(values["ce"]), float(values["adv0.3"])
    return RandGain(
        best=best,
        best_exact=float(values[best]),
        ce=ce,
        adv=adv,
        share=(float(values[best]) - ce) / (adv - ce),
        not_above_ce=[r for r in rands if float(values[r]) <= ce],
        ce_pgd=float(table.loc["ce", "pgd"]),
    )


def moons_rand_section(
    seeds: Sequence[int],
    noise: float = 0.05,
    profile: str = "cpu",
    *,
    results_root: str | Path,
    check: Any = None,
    **train: Any,
) -> dict[str, Any]:
    """The Moons chapter's rand rows beside ce and adv0.3 (PGD and exact at eps 0.3), as glue; ``train`` as in
    :func:`moons_rand_rows`. ``check`` (the chapter's checker) guards the chapter's two sentences about them."""
    try:
        table = moons_rand_rows(results_root, seeds, noise, profile=profile, **train)
        gain: RandGain | None = rand_gain(table)
    except (KeyError, ValueError) as missing:
        table, gain = None, None
        glue: dict[str, Any] = {"moons_rand": f"not measured yet ({missing})"}
    if check is not None:
        check(
            gain is not None and 0.2 < gain.share < 0.6 and len(gain.not_above_ce) >= 1,
            "the best rand row gains between a fifth and three fifths of adv0.3's exact gain over ce; "
            "some rand row none",
            gain=gain,
        )
        check(gain is not None and gain.ce_pgd > gain.ce + 0.05, "PGD overstates ce at eps 0.3 by > 0.05", gain=gain)
    if table is None or gain is None:
        return glue
    shown = pd.DataFrame(
        {
            "PGD at 0.3": [f"{a:.3f} ± {b:.3f}" for a, b in zip(table["pgd"], table["pgd_sd"].fillna(0), strict=True)],
            "exact at 0.3": [
                f"{a:.3f} ± {b:.3f}" for a, b in zip(table["exact"], table["exact_sd"].fillna(0), strict=True)
            ],
            "seeds": table["seeds"].astype(int).tolist(),
        },
        index=table.index,
    )
    shown.index.name = f"noise {noise:g}"
    glue = {
        "moons_rand": shown,
        "m_rand_noise": f"{noise:g}",
        "m_rand_best": gain.best,
        "m_rand_best_exact": f"{gain.best_exact:.3f}",
        "m_rand_ce": f"{gain.ce:.3f}",
        "m_rand_adv": f"{gain.adv:.3f}",
        "m_rand_share": f"{gain.share:.0%}",
        "m_rand_not_above_ce": ", ".join(gain.not_above_ce) or "none",
        "m_rand_ce_pgd": f"{gain.ce_pgd:.3f}",
    }
    return glue
