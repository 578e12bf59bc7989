"""The Moons chapter's analyses: Table 1 from the runs, and what goes beyond the paper.

Moons inputs are 2-D, so robust accuracy and each point's distance to the decision boundary can be
computed exactly (:mod:`imalib.exact`). The three expensive analyses (:func:`exact_accuracy`,
:func:`pgd_restarts`, :func:`margin_calibration`) are pure: they take a model and data and return a
record. Storing them is explicit and happens in one place: :func:`cached_analysis` keeps each record in
the run directory through :class:`RunCache` (``analysis-<name>.json``), and the book reads the stored
values. Every other function here is a pure function of runs and records that returns the chapter's
tables, texts and figures as ``glue name -> value`` mappings (see :func:`imalib.book.glue.glue_all`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from imalib import tables
from imalib.book.chapter import load_margins
from imalib.book.plots import (
    placeholder,
    plot_accuracy_curves,
    plot_calibration,
    plot_decision_boundaries,
    plot_disagreement,
    plot_margin_histograms,
)
from imalib.data.base import ArrayDataset, Splits
from imalib.data.moons import load_moons
from imalib.experiments import available
from imalib.io import load_torch, write_json
from imalib.paper import paper_table
from imalib.profiles import table_configs
from imalib.runs import Run

RESTARTS = 10          # per loss: 10 cross-entropy + 10 margin-loss PGD runs, 20 attacks in all
CALIBRATION_SAMPLES = 2000
RESOLUTION = 1e-3
ORDER = list(paper_table("moons", "linf").labels)   # ima, mma, trades, adv0.3, ce

Glue = dict[str, Any]


# ----------------------------------------------------------------------------------------- the one cache
class RunCache:
    """Analysis records stored beside a run's ``result.json`` as ``analysis-<name>.json``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def path(self, name: str) -> Path:
        return self.run_dir / f"analysis-{name}.json"

    def get(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored record ``name``; if there is none, ``compute()`` it and store it (atomically)."""
        path = self.path(name)
        if path.exists():
            return dict(json.loads(path.read_text()))
        value = compute()
        write_json(path, value)
        return value


def splits_of(run: Run) -> Splits:
    """The exact train / validation / test sets the run used."""
    config = run.config
    params = dict(config.data_params)
    return load_moons(config.n_train or 20000, params.get("n_val", 2000), config.n_test or 2000,
                      noise=params.get("noise", 0.1), seed=config.seed)


# ------------------------------------------------------------------------------ the expensive analyses
def exact_accuracy(model: nn.Module, test: ArrayDataset, eps_list: Sequence[float]) -> dict[str, Any]:
    """Exact L-inf robust accuracy at ``eps_list``, with the certificate counts and each point's witness offset."""
    from imalib.exact import exact_linf_robust

    result = exact_linf_robust(model, test.inputs(), test.y, list(eps_list), resolution=RESOLUTION)
    return {"eps": list(result.eps), "accuracy": result.accuracy, "undecided": result.undecided,
            "spacing": result.spacing, "method": result.method, "seconds": result.seconds,
            "witness_offset": [float(v) if math.isfinite(float(v)) else None for v in result.witness_offset]}


def pgd_restarts(model: nn.Module, test: ArrayDataset, eps_list: Sequence[float], *, steps: int, seed: int,
                 restarts: int = RESTARTS) -> dict[str, Any]:
    """The paper's attack with ``restarts`` random starts per loss (worst case per sample)."""
    from imalib.evaluate import evaluate_robustness

    result = evaluate_robustness(model, test.inputs(), test.y, norm="linf", eps_list=list(eps_list), steps=steps,
                                 restarts=restarts, clip=None, batch_size=len(test), seed=seed)
    return {"eps": list(result.eps), "accuracy": result.accuracy, "restarts_per_loss": restarts,
            "seconds": result.seconds}


def margin_calibration(model: nn.Module, train: ArrayDataset, margins: torch.Tensor, *, eps_max: float,
                       method: str, seed: int) -> dict[str, Any]:
    """Stored margins E(x) against each training point's exact L-inf distance to the boundary.

    Uses the first CALIBRATION_SAMPLES training points (the training order is already random). For IMA it
    also runs BPGD at the stored margins with and without its random start and records the distances found.
    """
    from imalib.attacks import bpgd
    from imalib.exact import exact_linf_distance

    idx = torch.arange(min(CALIBRATION_SAMPLES, len(train)))
    x, y = train.inputs(idx), train.y[idx]
    cap = max(eps_max * 1.5, float(margins.max()) * 1.1)
    exact = exact_linf_distance(model, x, y, max_radius=cap, resolution=RESOLUTION)
    out: dict[str, Any] = {"stored": margins[idx].tolist(), "exact": exact.tolist(), "cap": cap, "eps_max": eps_max}
    if method == "ima":
        for name, rand_init in (("bpgd_random_start", True), ("bpgd_no_random_start", False)):
            result = bpgd(model, x, y, margins[idx].float(), norm="linf", clip=None, rand_init=rand_init,
                          generator=torch.Generator().manual_seed(seed))
            out[name] = {"found": result.found.tolist(), "distance": result.distance.tolist()}
    return out


def _compute(run: Run, name: str) -> dict[str, Any]:
    config = run.config
    if name == "exact":
        return exact_accuracy(run.model, splits_of(run).test, config.eval_eps)
    if name == f"pgd-restarts{RESTARTS}":
        return pgd_restarts(run.model, splits_of(run).test, config.eval_eps, steps=config.eval_steps,
                            seed=config.seed + 7)
    if name == "calibration":
        margins = load_margins(run)
        if margins is None:
            raise ValueError(f"{run.path} has no margins.pt: only IMA and MMA runs have margins")
        return margin_calibration(run.model, splits_of(run).train, margins, eps_max=config.eps,
                                  method=config.method, seed=config.seed)
    raise ValueError(f"unknown analysis {name!r}: use exact, pgd-restarts{RESTARTS} or calibration")


def cached_analysis(run: Run, name: str) -> dict[str, Any]:
    """The book's one cache: the analysis ``name`` of ``run``, read from its run directory or computed and
    stored there. ``name`` is ``exact``, ``pgd-restarts10`` or ``calibration``."""
    return RunCache(run.path).get(name, lambda: _compute(run, name))


# --------------------------------------------------------------------------- pure functions of records
def witness_offsets(exact: dict[str, Any]) -> torch.Tensor:
    """Per test point, the L-inf offset of the nearest misclassified point the exact search found (inf: none)."""
    return torch.tensor([math.inf if v is None else v for v in exact["witness_offset"]], dtype=torch.float64)


def missed_by_pgd(pgd_robust: torch.Tensor, offsets: torch.Tensor, eval_eps: Sequence[float]
                  ) -> list[tuple[int, float, int]]:
    """(eps index, eps, test index) of every point PGD called robust (``pgd_robust[k, i]``) although the exact
    search found a misclassified point inside its eps-square (``offsets[i] <= eps``)."""
    missed: list[tuple[int, float, int]] = []
    for k, eps in enumerate(eval_eps):
        if eps == 0:
            continue
        hits = pgd_robust[k] & (offsets <= eps + 1e-9)
        missed.extend((k, float(eps), i) for i in hits.nonzero().flatten().tolist())
    return missed


def missed_in_run(run: Run) -> list[tuple[int, float, int]]:
    """:func:`missed_by_pgd` for a run: its stored PGD outcomes (``robust.pt``) against its exact record."""
    robust = load_torch(Path(run.path) / "robust.pt")
    return missed_by_pgd(robust, witness_offsets(cached_analysis(run, "exact")), run.config.eval_eps)


def summary(runs: Sequence[Run], records: Sequence[dict[str, Any]], key: str = "accuracy") -> pd.DataFrame:
    """Long table (label, seed, eps, value) of one analysis record per run."""
    rows = []
    for run, values in zip(runs, records):
        for eps, value in zip(values["eps"], values[key]):
            rows.append({"label": run.config.label, "seed": run.config.seed, "eps": eps, key: value})
    return pd.DataFrame(rows)


def disagreement_figure(run: Run, eps: float, index: int) -> Figure:
    """One test point that PGD calls robust at ``eps`` and the exact search does not (its witness drawn)."""
    from imalib.exact import exact_linf_robust

    test = splits_of(run).test
    x, y = test.inputs()[index:index + 1], test.y[index:index + 1]
    found = exact_linf_robust(run.model, x, y, [eps], resolution=RESOLUTION)
    title = (f"{run.config.label}, noise {dict(run.config.data_params).get('noise', 0.1):g}, seed {run.config.seed}, "
             f"eps {eps:g}: PGD says robust, it is not")
    return plot_disagreement(run.model, x, y, eps, found.witness[0], title=title)


Key = tuple[str, float, int]  # (method label, make_moons noise, seed)


def _mean_sd(values: list[float]) -> str:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def sweep_summary(clean: dict[Key, float], pgd: dict[Key, float], exact: dict[Key, float],
                  restarts: dict[tuple[str, float], float], order: list[str], eps: float,
                  restart_seed: int) -> dict[str, Any]:
    """The noise-sweep report at one noise level ``eps``, from per-run accuracies.

    ``clean``, ``pgd`` and ``exact`` map (label, noise, seed) to the clean accuracy, the paper's PGD
    accuracy and the exact robust accuracy at ``eps``; ``restarts`` maps (label, noise) to the accuracy
    under PGD with restarts for the seed ``restart_seed``. Returns
    ``table`` (one row per method and noise: mean ± sd over seeds, and the largest PGD - exact gap),
    ``worst`` (the key of the run with the largest gap) and ``rankings`` (per noise level, the methods
    ordered by mean accuracy under PGD and under the exact evaluation, and whether the orders agree).
    """
    missing = sorted(set(pgd) ^ set(exact))
    if missing:
        raise ValueError(f"PGD and exact accuracies must cover the same runs; only one has {missing}")
    rank = {label: i for i, label in enumerate(order)}
    groups: dict[tuple[str, float], list[Key]] = {}
    for key in sorted(pgd, key=lambda k: (k[1], rank.get(k[0], len(rank)), k[2])):
        groups.setdefault(key[:2], []).append(key)
    rows = []
    for (label, level), runs in groups.items():
        rows.append({"method": label, "noise": level, "seeds": len(runs),
                     "clean": _mean_sd([clean[k] for k in runs]), f"{eps:g} PGD": _mean_sd([pgd[k] for k in runs]),
                     f"{eps:g} exact": _mean_sd([exact[k] for k in runs]),
                     "PGD − exact (max over seeds)": f"{max(pgd[k] - exact[k] for k in runs):.4f}",
                     f"{eps:g} PGD×20 (seed {restart_seed})": f"{restarts[(label, level)]:.4f}"
                     if (label, level) in restarts else "–"})
    worst = max(pgd, key=lambda key: pgd[key] - exact[key])
    rankings = []
    for level in sorted({level for _, level in groups}):
        labels = [label for label, lvl in groups if lvl == level]
        orders = {}
        for name, values in (("PGD", pgd), ("exact", exact)):
            means = {l: sum(values[k] for k in groups[(l, level)]) / len(groups[(l, level)]) for l in labels}
            orders[name] = " > ".join(sorted(labels, key=lambda l: -means[l]))
        same = "same order" if orders["PGD"] == orders["exact"] else "**different order**"
        rankings.append(f"noise {level:g}: PGD {orders['PGD']}; exact {orders['exact']} ({same})")
    return {"table": pd.DataFrame(rows).set_index("method"), "worst": worst, "rankings": rankings}


def compare(mean: pd.DataFrame, std: pd.DataFrame, a: str, b: str) -> str:
    """One sentence: is ``a`` above ``b`` at the largest noise level, and is the gap larger than the seed spread?"""
    last = mean.columns[-1]
    if a not in mean.index or b not in mean.index:
        return "not available"
    d = mean.loc[a, last] - mean.loc[b, last]
    spread = float(np.hypot(std.loc[a, last], std.loc[b, last]))
    verdict = "above" if d > 0 else "below"
    size = "larger" if abs(d) > spread else "not larger"
    return (f"{a} is {verdict} {b} by {abs(d):.3f} ({a} {mean.loc[a, last]:.3f}, {b} {mean.loc[b, last]:.3f}); "
            f"the gap is {size} than the combined seed spread ({spread:.3f})")


# ---------------------------------------------------------------------------------- the runs of the chapter
def table_runs(profile: str, seeds: Sequence[int], methods: list[str] | None, noise: float, *,
               method_params: dict[str, dict[str, Any]] | None = None, **where: Any
               ) -> tuple[list[Run], list[Any]]:
    """The finished runs (and the missing configurations) of Table 1's rows over ``seeds`` at one make_moons
    noise. ``where`` is passed to :func:`imalib.experiments.available` (results_root, data_root, device, ...)."""
    configs = [c for s in seeds for c in table_configs("moons", "linf", profile, seed=s, methods=methods,
                                                       data_params={"noise": noise}, method_params=method_params)]
    return available(configs, **where)


def sweep_runs(profile: str, seeds: Sequence[int], methods: list[str] | None, noise_levels: Sequence[float],
               **where: Any) -> tuple[list[Run], list[Any]]:
    """Table 1's rows at every make_moons noise level of the sweep."""
    configs = [c for lvl in noise_levels for s in seeds
               for c in table_configs("moons", "linf", profile, seed=s, methods=methods, data_params={"noise": lvl})]
    return available(configs, **where)


# ------------------------------------------------------------------------------------- the chapter's sections
@dataclass(frozen=True)
class TableOne:
    """Table 1 as measured: the long frame, mean and sd over seeds, the paper's table, the row order."""

    frame: pd.DataFrame
    mean: pd.DataFrame
    std: pd.DataFrame
    paper: pd.DataFrame
    order: list[str]
    glue: Glue


def table_one(runs: Sequence[Run], missing: Sequence[Any], profile: str, noise: float) -> TableOne:
    order = [label for label in ORDER if any(r.config.label == label for r in runs)]
    frame = tables.results_frame(runs)
    mean = tables.mean_table(frame, order=order)
    std = tables.std_table(frame, order=order)
    paper = tables.paper_frame("moons", "linf")
    seed_counts = frame.groupby("label")["seed"].nunique()
    glue: Glue = {
        "m_profile": profile, "m_noise": noise,
        "m_seeds": ", ".join(str(s) for s in sorted(frame["seed"].unique())),
        "m_missing": "none" if not missing else ", ".join(f"{c.label} seed {c.seed}" for c in missing),
        "m_nseeds_min": int(seed_counts.min()),
        "m_table_ours": tables.mean_std_text(mean, std).rename_axis("method"),
        "m_table_side": tables.side_by_side(mean, paper).rename_axis("method"),
    }
    return TableOne(frame, mean, std, paper, order, glue)


def closeness(table: TableOne, profile: str) -> Glue:
    """How close Table 1 is to the paper's, the paper's ordering at the largest eps, monotonicity, the curves."""
    mean, std, frame, order = table.mean, table.std, table.frame, table.order
    diff = tables.difference(mean, table.paper)
    within = diff.abs() <= 0.05
    ima_ok = bool(within.loc["ima"].all()) if "ima" in within.index else False
    worst = diff.abs().stack().idxmax() if len(diff) else None
    envelope_gap = float((tables.mean_table(frame, "accuracy", order)
                          - tables.mean_table(frame, "envelope", order)).abs().max().max())
    return {
        "m_ima_within": "yes" if ima_ok else "no",
        "m_ima_maxdiff": format(float(diff.loc["ima"].abs().max()) if "ima" in diff.index else float("nan"), ".3f"),
        "m_ima_maxdiff_eps": format(float(diff.loc["ima"].abs().idxmax()) if "ima" in diff.index else float("nan"),
                                    "g"),
        "m_worst_cell": f"{worst[0]} at eps {worst[1]:g}: {diff.loc[worst]:+.3f}" if worst else "n/a",
        "m_cmp_mma": compare(mean, std, "ima", "mma"), "m_cmp_ce": compare(mean, std, "ima", "ce"),
        "m_cmp_adv": compare(mean, std, "ima", "adv0.3"), "m_cmp_trades": compare(mean, std, "ima", "trades"),
        "m_envelope_gap": format(envelope_gap, ".4f"),
        "m_rises": int(frame["rises"].sum()),
        "m_curves": plot_accuracy_curves(mean, table.paper, std=std, title=f"Moons, L-inf, profile {profile}"),
    }


def boundaries_and_margins(runs: Sequence[Run], order: Sequence[str], seed: int) -> Glue:
    """Figure 6 (each method's decision boundary, first seed) and the IMA / MMA margin histograms."""
    seed0 = [r for label in order for r in runs if r.config.label == label and r.config.seed == seed]
    if not seed0:
        return {}
    test = splits_of(seed0[0]).test
    margin_runs = [r for r in runs if r.config.label in ("ima", "mma") and r.config.seed == seed]
    return {"m_boundaries": plot_decision_boundaries(seed0, test.inputs(), test.y),
            "m_hist": plot_margin_histograms({r.config.label: m for r in margin_runs
                                              if (m := load_margins(r)) is not None}, 0.3)}


def margin_modes(runs: Sequence[Run], fused_runs: Sequence[Run]) -> Glue:
    """Algorithm 2 as written against fused into the training step: accuracy, time and final mean margin."""
    paper_mode = [r for r in runs if r.config.label == "ima"]
    modes = tables.results_frame(paper_mode).assign(label="ima (paper mode)")
    if fused_runs:
        modes = pd.concat([modes, tables.results_frame(fused_runs).assign(label="ima (fused mode)")])
    mode_text = tables.mean_std_text(tables.mean_table(modes), tables.std_table(modes)).rename_axis("margin update")
    time_rows = []
    for name, group in (("paper", paper_mode), ("fused", list(fused_runs))):
        if group:
            time_rows.append({"margin update": name, "runs": len(group),
                              "mean training seconds": np.mean([r.record.train_seconds for r in group]),
                              "final mean margin": np.mean([r.record.final.mean_margin for r in group])})
    return {"m_modes": mode_text, "m_modes_time": pd.DataFrame(time_rows).set_index("margin update").round(3)}


def margin_step(runs: Sequence[Run], delta_runs: Sequence[Run], delta_missing: Sequence[Any],
                frame: pd.DataFrame) -> Glue:
    """IMA with the paper's margin step 0.3/30 against the authors' code's 0.3/10, the others for reference."""
    paper_mode = [r for r in runs if r.config.label == "ima"]
    steps = tables.results_frame(paper_mode).assign(label="ima, Δ = 0.3/30 = 0.01 (paper's text)")
    if delta_runs:
        steps = pd.concat([steps, tables.results_frame(delta_runs).assign(
            label="ima, Δ = 0.3/10 = 0.03 (authors' code)")])
        for other in ("mma", "trades", "adv0.3"):
            steps = pd.concat([steps, frame[frame["label"] == other]])
    return {"m_delta": tables.mean_std_text(tables.mean_table(steps), tables.std_table(steps)).rename_axis("method"),
            "m_delta_missing": "none" if not delta_missing else ", ".join(f"seed {c.seed}" for c in delta_missing)}


@dataclass(frozen=True)
class ExactSection:
    mean: pd.DataFrame          # exact robust accuracy, mean over seeds
    glue: Glue


def exact_section(runs: Sequence[Run], table: TableOne) -> ExactSection:
    """PGD, PGD with restarts and the exact robust accuracy per method, and their gaps."""
    exact_records = [cached_analysis(r, "exact") for r in runs]
    restart_records = [cached_analysis(r, f"pgd-restarts{RESTARTS}") for r in runs]
    ex_mean = tables.mean_table(summary(runs, exact_records), order=table.order)
    rs_mean = tables.mean_table(summary(runs, restart_records), order=table.order)
    mean = table.mean
    columns = {}
    for e in mean.columns:
        columns[(e, "PGD")] = mean[e]
        columns[(e, "PGD×20")] = rs_mean[e]
        columns[(e, "exact")] = ex_mean[e]
    triple = pd.DataFrame(columns).round(4)
    triple.columns = [f"{e:g} {kind}" for e, kind in triple.columns]
    gap = mean - ex_mean
    return ExactSection(ex_mean, {
        "m_exact_table": triple.rename_axis("method"),
        "m_gap_table": gap.round(4).rename_axis("method"),
        "m_gap_max": format(float(gap.max().max()), ".4f"),
        "m_gap_min": format(float(gap.min().min()), ".4f"),
        "m_gap_restart_max": format(float((rs_mean - ex_mean).max().max()), ".4f"),
        "m_undecided": sum(sum(record["undecided"]) for record in exact_records),
        "m_spacing": format(exact_records[0]["spacing"], ".2e"),
        "m_exact_method": exact_records[0]["method"],
        "m_restarts": RESTARTS,
    })


def disagreements(runs: Sequence[Run], seed: int) -> Glue:
    """How many points of the first seed's runs PGD called robust wrongly, and one of them drawn."""
    candidates = [(run, k, e, i) for run in runs if run.config.seed == seed for k, e, i in missed_in_run(run)]
    if candidates:
        run, _, e, i = candidates[len(candidates) // 2]
        fig = disagreement_figure(run, e, i)
    else:
        fig = placeholder("PGD and the exact evaluation agreed on every point")
    return {"m_disagree_count": len(candidates), "m_disagree_fig": fig}


def calibration(runs: Sequence[Run], seed: int) -> Glue:
    """Stored IMA / MMA margins against the exact distances, and BPGD with and without its random start."""
    calib_rows, bpgd_rows = [], []
    scatter = {}
    for run in runs:
        if run.config.label not in ("ima", "mma"):
            continue
        cal = cached_analysis(run, "calibration")
        stored, true = np.array(cal["stored"]), np.array(cal["exact"])
        ok = true > 0
        calib_rows.append({"method": run.config.label, "seed": run.config.seed,
                           "mean stored": stored[ok].mean(), "mean exact": true[ok].mean(),
                           "median stored/exact": float(np.median(stored[ok] / true[ok])),
                           "share stored > 1.1 × exact": float((stored[ok] > 1.1 * true[ok]).mean())})
        if run.config.seed == seed:
            scatter[run.config.label] = (true, stored)
        if run.config.label == "ima":
            for name in ("bpgd_random_start", "bpgd_no_random_start"):
                found = np.array(cal[name]["found"])
                dist = np.array(cal[name]["distance"])
                sel = found & ok
                bpgd_rows.append({
                    "BPGD": name.replace("bpgd_", "").replace("_", " "), "seed": run.config.seed,
                    "share found": found.mean(),
                    "median found / exact": float(np.median(dist[sel] / true[sel])) if sel.any() else float("nan"),
                    "mean abs(found − exact)": float(np.abs(dist[sel] - true[sel]).mean()) if sel.any()
                    else float("nan")})
    glue: Glue = {}
    if calib_rows:
        calib = pd.DataFrame(calib_rows).groupby("method").mean(numeric_only=True).drop(columns="seed").round(3)
        glue["m_calib"] = calib.rename_axis("method")
    else:
        glue["m_calib"] = "(no IMA or MMA run among the selected methods)"
    if bpgd_rows:
        bp = pd.DataFrame(bpgd_rows).groupby("BPGD").mean(numeric_only=True).drop(columns="seed").round(4)
        glue["m_bpgd_start"] = bp.rename_axis("BPGD start")
    else:
        glue["m_bpgd_start"] = "(no IMA run among the selected methods)"
    glue["m_calib_fig"] = plot_calibration(scatter)
    return glue


def noise_sweep(sweep: Sequence[Run], missing: Sequence[Any], seed: int) -> Glue:
    """Clean, PGD, exact and PGD-with-restarts accuracy at every make_moons noise level of the sweep."""
    frame = tables.results_frame(sweep)
    hard_eps = max(frame["eps"])

    def key(r: Run) -> Key:
        return (r.config.label, float(dict(r.config.data_params).get("noise", 0.1)), r.config.seed)

    def at(record: dict[str, Any], eps: float) -> float:  # accuracy at eps in a record {"eps": [...], "accuracy": [...]}
        return dict(zip(record["eps"], record["accuracy"]))[eps]

    clean_at = {key(r): r.record.accuracy_at(0.0) for r in sweep}
    pgd_at = {key(r): r.record.accuracy_at(hard_eps) for r in sweep}
    exact_at = {key(r): at(cached_analysis(r, "exact"), hard_eps) for r in sweep}
    restart_at = {key(r)[:2]: at(cached_analysis(r, f"pgd-restarts{RESTARTS}"), hard_eps)
                  for r in sweep if r.config.seed == seed}
    report = sweep_summary(clean_at, pgd_at, exact_at, restart_at, ORDER, hard_eps, restart_seed=seed)
    worst = report["worst"]
    worst_run = next(r for r in sweep if key(r) == worst)
    worst_missed = [(e, i) for _, e, i in missed_in_run(worst_run) if e == hard_eps]
    offsets = witness_offsets(cached_analysis(worst_run, "exact"))[[i for _, i in worst_missed]]
    if worst_missed:
        fig = disagreement_figure(worst_run, *worst_missed[len(worst_missed) // 2])
    else:
        fig = placeholder("PGD and the exact evaluation agreed on every point")
    ce_clean = frame[(frame["label"] == "ce") & (frame["eps"] == 0)].groupby("data_noise")["accuracy"].mean()
    return {
        "m_sweep": report["table"],
        "m_sweep_missing": "none" if not missing else f"{len(missing)} runs (" + ", ".join(
            sorted({f'noise {c.data_params[0][1]}' for c in missing})) + ")",
        "m_sweep_rankings": "; ".join(report["rankings"]),
        "m_sweep_gap": f"{pgd_at[worst] - exact_at[worst]:.3f} ({worst[0]}, noise {worst[1]:g}, seed {worst[2]}: "
                       f"PGD {pgd_at[worst]:.3f}, exact {exact_at[worst]:.3f})",
        "m_sweep_gap_offset": f"{float(offsets.median()):.3f}" if len(worst_missed) else "n/a",
        "m_sweep_gap_fig": fig,
        "m_ce_clean": "; ".join(f"noise {k:g}: {v:.4f}" for k, v in ce_clean.items()),
    }


def ranking(mean: pd.DataFrame, exact_mean: pd.DataFrame) -> Glue:
    """The methods ranked at the largest eps by PGD and by exact accuracy, and where IMA stands."""
    last_eps = mean.columns[-1]
    rank_pgd = list(mean[last_eps].sort_values(ascending=False).index)
    rank_exact = list(exact_mean[last_eps].sort_values(ascending=False).index)
    glue: Glue = {
        "m_rank_pgd": " > ".join(rank_pgd), "m_rank_exact": " > ".join(rank_exact),
        "m_rank_same": "the same" if rank_pgd == rank_exact else "a different",
        "m_rank_verdict": "too small to change which method ranks above which at this noise level"
        if rank_pgd == rank_exact else "large enough to change the ranking at this noise level",
    }
    others = ("mma", "trades", "adv0.3", "ce")
    if "ima" in mean.index:
        beaten = [m for m in others if m in mean.index and mean.loc["ima", last_eps] > mean.loc[m, last_eps]]
        not_beaten = [m for m in others if m in mean.index and m not in beaten]
        glue["m_ima_beats"] = ", ".join(beaten) if beaten else "none of the other methods"
        glue["m_ima_not_beats"] = ", ".join(not_beaten) if not_beaten else "none"
    else:
        glue["m_ima_beats"] = glue["m_ima_not_beats"] = "(IMA not among the selected methods)"
    if "ima" in mean.index and "ce" in mean.index:
        above_ce = [e for e in mean.columns if all(mean.loc["ima", f] > mean.loc["ce", f] for f in mean.columns if f >= e)]
        glue["m_ima_above_ce_from"] = f"{min(above_ce):g}" if above_ce else "nowhere"
    else:
        glue["m_ima_above_ce_from"] = "(not measured: IMA or ce not selected)"
    return glue


def what_ran(runs: Sequence[Run]) -> Glue:
    """The settings every run shares, the hardware, and the summed training and evaluation time."""
    cfg = runs[0].config.to_dict()
    params = pd.DataFrame({"value": {k: str(v) for k, v in cfg.items()
                                     if k not in ("method", "eps", "seed", "method_params")}})
    env = runs[0].record.environment
    return {
        "m_params": params.rename_axis("parameter"),
        "m_env": f"{env.machine}, {env.cpu_count} CPU cores, torch {env.torch}, "
                 f"{env.torch_threads} thread(s) per process",
        "m_train_total": format(sum(r.record.train_seconds for r in runs) / 60, ".1f"),
        "m_eval_total": format(sum(r.record.eval_seconds for r in runs) / 60, ".1f"),
    }


def bpgd_example(run: Run, eps: float, profile: str) -> Glue:
    """The Method chapter's BPGD figure: BPGD on the run's test set at ``eps``, drawn for one point whose PGD
    path crosses the boundary, and the share of correctly classified points for which it found one."""
    from imalib.attacks import bpgd
    from imalib.book.plots import plot_bpgd

    test = splits_of(run).test
    x, y = test.inputs(), test.y
    result = bpgd(run.model, x, y, eps, norm="linf", clip=None, generator=torch.Generator().manual_seed(0))
    correct = run.model(x).argmax(1) == y
    candidates = (result.found & correct).nonzero().squeeze(1)
    pick = int(candidates[len(candidates) // 2])
    return {"bpgd_figure": plot_bpgd(run.model, x[pick:pick + 1], y[pick:pick + 1], eps),
            "bpgd_found_share": format(float(result.found[correct].float().mean()), ".3f"),
            "bpgd_eps": format(eps, "g"), "bpgd_profile": profile}
