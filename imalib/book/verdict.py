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
    frame = moons.pgd_exact_rows(runs, eps)
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
    from imalib.profiles import table_labels

    keep = set(table_labels(dataset, norm))
    records: list[ResultRecord] = [
        r for r in collect(results_root, dataset=dataset, norm=norm, profile=profile) if r.label in keep
    ]  # the paper's rows only: the book's extra rows (rand, adv at the suggested eps) are read elsewhere
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


# ------------------------------------------------------------------------------------------ the page
@dataclass(frozen=True)
class Claim:
    """One hidden check of the verdict page: the condition, the sentence it guards, the numbers behind it."""

    holds: bool
    claim: str
    numbers: dict[str, Any]


@dataclass(frozen=True)
class VerdictPage:
    """Everything the verdict page quotes (``glue``: name -> text or table) and the checks guarding it."""

    glue: dict[str, Any]
    claims: list[Claim]

    def failing(self) -> list[Claim]:
        return [c for c in self.claims if not c.holds]

    def check_all(self) -> None:
        """Raise FindingNotSupported on the first claim the records no longer support."""
        from imalib.book.findings import check

        for c in self.claims:
            check(c.holds, c.claim, **c.numbers)


def verdict_page(
    results_root: str,
    seeds: Sequence[int],
    noise_levels: Sequence[float],
    profile: str = "cpu",
    *,
    rand_noise: float = 0.05,
    equilibrium_noise: float = 0.1,
) -> VerdictPage:
    """The verdict page's numbers and checks, from the records under ``results_root`` (one call for the page)."""
    from imalib.book import claims as cl
    from imalib.profiles import table_labels

    glue: dict[str, Any] = {}
    out: list[Claim] = []

    def claim(holds: Any, text: str, **numbers: Any) -> None:
        out.append(Claim(bool(holds), text, numbers))

    # 1. Moons
    m = moons_verdict(results_root, seeds, noise_levels)
    ima_gap = m.pgd["ima"] - m.exact["ima"]
    ima_exact_rank = list(m.exact.sort_values(ascending=False).index).index("ima") + 1
    lead = m.pgd["ima"] - m.pgd.drop("ima").max()
    glue |= {
        "v_noise": f"{m.noise:g}",
        "v_seeds": m.seeds,
        "v_ima_pgd": fmt(m.pgd["ima"]),
        "v_ima_sd": fmt(m.pgd_sd["ima"]),
        "v_lead": fmt(lead),
        "v_ima_exact": fmt(m.exact["ima"]),
        "v_ima_exact_rank": ima_exact_rank,
        "v_exact_first": m.exact.idxmax(),
        "v_exact_first_value": fmt(m.exact.max()),
        "v_ima_gap": fmt(ima_gap),
    }
    claim(lead >= 0 and lead < m.pgd_sd["ima"], "Moons: IMA first under PGD, within its seed sd", lead=lead)
    claim(
        ima_exact_rank >= 3 and ima_gap > 0.1,
        "Moons: exactly, IMA third or lower; PGD overstates it by > 0.1",
        rank=ima_exact_rank,
        gap=ima_gap,
    )

    # 2. Fashion-MNIST, the paper's rows, 300 images
    fm = image_verdict(results_root, "fashion_mnist", "linf", profile)
    fmw = image_verdict(results_root, "fashion_mnist", "linf", profile, attack="worst_of_both")
    if fm is None or fmw is None:
        raise FileNotFoundError(f"no Fashion-MNIST L-inf records at profile {profile} under {results_root}")
    attacked = [e for e in fm.accuracy.columns if e > 0]
    adv_rows = [label for label in fm.accuracy.index if label.startswith("adv")]
    above_adv = [e for e in attacked if all(fm.resolved_above("ima", a, e) for a in adv_rows)]
    w_above_adv = [e for e in attacked if all(fmw.resolved_above("ima", a, e) for a in adv_rows)]
    missing_w = [label for label in fm.accuracy.index if label not in fmw.accuracy.index]
    glue |= {
        "v_fm_n": fm.n_test,
        "v_fm_se": fmt(fm.max_se),
        "v_fm_seeds": fm.seed_text(),
        "v_fm_ima_mma_unresolved": fmt_eps(fm.unresolved_eps("ima", "mma")),
        "v_fm_ima_trades": fmt_eps(fm.resolved_eps("ima", "trades")),
        "v_fm_mma_trades": fmt_eps(fm.resolved_eps("mma", "trades")),
        "v_fm_adv": fmt_eps(above_adv),
        "v_fm_ima_03": fmt(fm.accuracy.loc["ima", 0.3]),
        "v_fm_mma_03": fmt(fm.accuracy.loc["mma", 0.3]),
        "v_fmw_scope": "AutoAttack measured for every row"
        if not missing_w
        else f"AutoAttack not yet measured for {', '.join(missing_w)}",
        "v_fmw_ima_mma": pair_eps(fmw, "ima", "mma", unresolved=True),
        "v_fmw_adv": fmt_eps(w_above_adv),
        "v_fmw_ima_trades": pair_eps(fmw, "ima", "trades"),
        "v_fmw_mma_trades": pair_eps(fmw, "mma", "trades"),
        "v_fmw_ima_03": fmt(fmw.accuracy.loc["ima", 0.3]),
        "v_fmw_mma_03": fmt(fmw.accuracy.loc["mma", 0.3]),
    }
    claim(fm.unresolved_eps("ima", "mma") == attacked, "Fashion-MNIST: IMA and MMA not resolved at any eps")
    claim(
        fm.resolved_eps("ima", "trades") and fm.resolved_eps("mma", "trades"),
        "Fashion-MNIST: IMA and MMA resolved above TRADES somewhere",
    )
    claim(above_adv == [], "Fashion-MNIST: at no eps is IMA resolved above every adv row", eps=above_adv)
    claim(
        not missing_w and fmw.unresolved_eps("ima", "mma") == attacked,
        "Fashion-MNIST, worst of PGD and AutoAttack: every row measured, IMA and MMA not resolved at any eps",
        missing=missing_w,
    )
    claim(
        all(fmw.accuracy.loc[x, 0.3] < fm.accuracy.loc[x, 0.3] for x in ("ima", "mma")),
        "Fashion-MNIST: AutoAttack lowers IMA's and MMA's accuracy at eps 0.3",
    )
    claim(
        w_above_adv == [],
        "Fashion-MNIST, worst of both: at no eps is IMA resolved above every adv row",
        eps=w_above_adv,
    )
    claim(
        fmw.resolved_eps("ima", "trades") and fmw.resolved_eps("mma", "trades"),
        "Fashion-MNIST, worst of both: IMA and MMA resolved above TRADES somewhere",
    )

    # 2b. IMA against MMA on the large test
    for norm in ("linf", "l2"):
        key = f"v_large_{norm}"
        large = cl.row_table(cl.image_records(results_root, "fashion_mnist", norm, profile, ["ima", "mma"]), "large")
        if large is None or not {"ima", "mma"} <= set(large.mean.index):
            claim(False, f"Fashion-MNIST {norm}: IMA and MMA measured on the large test")
            continue
        pair = cl.pair_at_scale(large)
        top = max(pair.ima)
        glue |= {
            f"{key}_n": pair.n_images,
            f"{key}_seeds": pair.seeds,
            f"{key}_se": f"{pair.max_se:.3f}",
            f"{key}_above": fmt_eps(pair.above),
            f"{key}_below": fmt_eps(pair.below),
            f"{key}_level": fmt_eps(pair.level),
            f"{key}_top": f"{top:g}",
            f"{key}_ima_top": fmt(pair.ima[top]),
            f"{key}_mma_top": fmt(pair.mma[top]),
            f"{key}_pair": pair,
        }
        claim(pair.max_se <= 0.011, f"Fashion-MNIST {norm}: the large test's cells have SE <= 0.011", se=pair.max_se)
        claim(pair.seeds >= 2, f"Fashion-MNIST {norm}: the large test has two or more seeds per row", seeds=pair.seeds)
        claim(pair.above == [], f"Fashion-MNIST {norm}: on the large test IMA is nowhere resolved above MMA",
              above=pair.above, ima=pair.ima, mma=pair.mma)  # fmt: skip

    # 5. margins
    below = calibration_below_cap(results_root, seeds)
    glue |= {
        "v_over_mma": f"{below.loc['mma', 'share over by > 10 %']:.0%}",
        "v_over_ima": f"{below.loc['ima', 'share over by > 10 %']:.0%}",
    }
    claim(
        below.loc["mma", "share over by > 10 %"] > below.loc["ima", "share over by > 10 %"] + 0.05,
        "Moons: below the cap MMA overestimates margins more often than IMA",
        below=below.to_dict(),
    )

    # 6. margin -> eps
    margins = cl.pooled_margins(results_root, "fashion_mnist", "linf", profile, seeds)
    eps = cl.suggested_eps(margins)
    q = cl.margin_quantiles(margins)
    suggested = f"adv{eps:g}"
    labels = [*table_labels("fashion_mnist", "linf"), suggested, *cl.rand_labels()]
    records = cl.image_records(results_root, "fashion_mnist", "linf", profile, labels)
    tables = {src: cl.row_table(records, src) for src in ("pgd", "worst_of_both")}
    glue |= {"v_sugg_eps": f"{eps:g}", "v_sugg_q": f"{q[0.25]:.2f}–{q[0.75]:.2f}", "v_sugg_rule": cl.MARGIN_RULE}
    for src, short in (("pgd", "p"), ("worst_of_both", "w")):
        table = tables[src]
        if table is None or suggested not in table.area.index:
            claim(False, f"Fashion-MNIST: adv at the suggested eps {eps:g} has been trained ({src})")
            continue
        s = cl.suggested_vs_adv(table, suggested, adv_rows)
        glue |= {
            f"v_sugg_{short}_area": fmt(s.area),
            f"v_sugg_{short}_best": s.best,
            f"v_sugg_{short}_best_area": fmt(s.best_area),
            f"v_sugg_{short}_tol": fmt(s.tolerance),
            "v_sugg_seeds": s.seeds,
        }
        claim(
            s.near_best and s.rows_above == [],
            f"Fashion-MNIST ({src}): adv{eps:g} within two SE of the best adv row, no adv row above it",
            area=s.area,
            best=s.best,
            best_area=s.best_area,
            tolerance=s.tolerance,
            above=s.rows_above,
        )

    # 8. rand
    pgd = tables["pgd"]
    worst = tables["worst_of_both"]
    rands = cl.rand_labels()
    shares = {}
    for src, table in (("pgd", pgd), ("worst_of_both", worst)):
        assert table is not None
        area = table.area["mean"]
        gain_adv = min(area[a] for a in adv_rows) - area["ce"]
        shares[src] = max(area[r] - area["ce"] for r in rands) / gain_adv
    assert pgd is not None
    glue |= {
        "v_rand_lo": fmt(min(pgd.area.loc[r, "mean"] for r in rands)),
        "v_rand_hi": fmt(max(pgd.area.loc[r, "mean"] for r in rands)),
        "v_rand_ce": fmt(pgd.area.loc["ce", "mean"]),
        "v_rand_adv_lo": fmt(min(pgd.area.loc[a, "mean"] for a in adv_rows)),
        "v_rand_share": f"{shares['pgd']:.0%}",
        "v_rand_share_w": f"{shares['worst_of_both']:.0%}",
    }
    claim(
        max(shares.values()) < 0.15,
        "Fashion-MNIST: the best rand row gains under 15 % of what the weakest adv row gains over ce",
        shares=shares,
    )
    g = cl.rand_gain(cl.moons_rand_rows(results_root, seeds, rand_noise))
    glue |= {
        "v_mrand_noise": f"{rand_noise:g}",
        "v_mrand_best": g.best,
        "v_mrand_best_exact": fmt(g.best_exact),
        "v_mrand_ce": fmt(g.ce),
        "v_mrand_adv": fmt(g.adv),
        "v_mrand_share": f"{g.share:.0%}",
        "v_mrand_not_above_ce": ", ".join(g.not_above_ce) or "none",
    }
    claim(
        0.2 < g.share < 0.6 and len(g.not_above_ce) >= 1,
        "Moons: the best rand row gains between 20 and 60 % of adv0.3's gain over ce (exactly), some rand row none",
        share=g.share,
        not_above_ce=g.not_above_ce,
    )

    # 9. white noise
    wn_records = cl.image_records(results_root, "fashion_mnist", "linf", profile, labels)
    wn = cl.white_noise_table(wn_records)
    flips = cl.white_noise_table(wn_records, "flip_rate")
    everything = collect(results_root, dataset="fashion_mnist", profile=profile)
    glue |= {
        "v_wn_models": sum(1 for r in everything if r.white_noise is not None),
        "v_wn_all": len(everything),
        "v_wn_table": wn.round(4),
        "v_wn_flip_table": flips.round(4),
    }
    if "ce" in flips.index:
        glue |= {
            "v_wn_ce_05": f"{wn.loc['ce', 0.05]:.2%}",
            "v_wn_ce_clean": f"{wn.loc['ce', 'clean error']:.2%}",
            "v_wn_ce_flip_05": f"{flips.loc['ce', 0.05]:.2%}",
            "v_wn_ce_flip_03": f"{flips.loc['ce', 0.3]:.2%}",
            "v_wn_ce_seeds": int(flips.loc["ce", "seeds"]),
        }
    claim(
        "ce" in flips.index and 0 < flips.loc["ce", 0.05] < 0.0275,
        "Fashion-MNIST: white noise at 0.05 flips some of ce's correct predictions, fewer than the paper's 2.75 %",
        table=flips.to_dict() if len(flips) else {},
    )
    glue |= {
        "v_wn_max_flip_05": f"{flips[0.05].max():.2%}" if len(flips) else "n/a",
        "v_wn_max_flip_label": str(flips[0.05].idxmax()) if len(flips) else "n/a",
    }

    # 7. the equilibrium
    halfway = cl.halfway_table(results_root, seeds, equilibrium_noise)
    imbalance = halfway["median imbalance"]
    rank = list(imbalance.sort_values().index).index("ima") + 1
    glue |= {
        "v_eq_noise": f"{equilibrium_noise:g}",
        "v_eq_pairs": int(halfway.loc["ima", "pairs"]),
        "v_eq_seeds": int(halfway["seeds"].min()),
        "v_eq_usage_lo": fmt(halfway["median usage"].min(), 2),
        "v_eq_usage_hi": fmt(halfway["median usage"].max(), 2),
        "v_eq_ima": fmt(imbalance["ima"], 2),
        "v_eq_adv": fmt(imbalance["adv0.3"], 2),
        "v_eq_mma": fmt(imbalance["mma"], 2),
        "v_eq_trades": fmt(imbalance["trades"], 2),
        "v_eq_ce": fmt(imbalance["ce"], 2),
        "v_eq_rank": rank,
        "v_eq_most_balanced": str(imbalance.idxmin()),
    }
    claim(
        rank >= 3 and imbalance["ima"] > imbalance["adv0.3"],
        "Moons: IMA's boundary is not nearer halfway than adv0.3's (imbalance), third or lower of five",
        imbalance=imbalance.to_dict(),
    )

    for dataset in ("svhn", "covid"):
        claim(image_verdict(results_root, dataset, "linf", profile) is None, f"{dataset}: not tested here (no records)")
    return VerdictPage(glue, out)
