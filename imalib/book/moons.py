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

RESTARTS = 10  # per loss: 10 cross-entropy + 10 margin-loss PGD runs, 20 attacks in all
CALIBRATION_SAMPLES = 2000
EQUILIBRIUM_EPS_MAX = 0.3  # IMA's cap in Table 1: the balls of two samples collide within it
RESOLUTION = 1e-3
ORDER = list(paper_table("moons", "linf").labels)  # ima, mma, trades, adv0.3, ce

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
    return load_moons(
        config.n_train or 20000,
        params.get("n_val", 2000),
        config.n_test or 2000,
        noise=params.get("noise", 0.1),
        seed=config.seed,
    )


# ------------------------------------------------------------------------------ the expensive analyses
def exact_accuracy(model: nn.Module, test: ArrayDataset, eps_list: Sequence[float]) -> dict[str, Any]:
    """Exact L-inf robust accuracy at ``eps_list``, with the certificate counts and each point's witness offset."""
    from imalib.exact import exact_linf_robust

    result = exact_linf_robust(model, test.inputs(), test.y, list(eps_list), resolution=RESOLUTION)
    return {
        "eps": list(result.eps),
        "accuracy": result.accuracy,
        "undecided": result.undecided,
        "spacing": result.spacing,
        "method": result.method,
        "seconds": result.seconds,
        "witness_offset": [float(v) if math.isfinite(float(v)) else None for v in result.witness_offset],
    }


def pgd_restarts(
    model: nn.Module, test: ArrayDataset, eps_list: Sequence[float], *, steps: int, seed: int, restarts: int = RESTARTS
) -> dict[str, Any]:
    """The paper's attack with ``restarts`` random starts per loss (worst case per sample)."""
    from imalib.evaluate import evaluate_robustness

    result = evaluate_robustness(
        model,
        test.inputs(),
        test.y,
        norm="linf",
        eps_list=list(eps_list),
        steps=steps,
        restarts=restarts,
        clip=None,
        batch_size=len(test),
        seed=seed,
    )
    return {
        "eps": list(result.eps),
        "accuracy": result.accuracy,
        "restarts_per_loss": restarts,
        "seconds": result.seconds,
    }


def margin_calibration(
    model: nn.Module, train: ArrayDataset, margins: torch.Tensor, *, eps_max: float, method: str, seed: int
) -> dict[str, Any]:
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
            result = bpgd(
                model,
                x,
                y,
                margins[idx].float(),
                norm="linf",
                clip=None,
                rand_init=rand_init,
                generator=torch.Generator(device=x.device).manual_seed(seed),
            )
            out[name] = {"found": result.found.tolist(), "distance": result.distance.tolist()}
    return out


def _compute(run: Run, name: str) -> dict[str, Any]:
    config = run.config
    if name == "exact":
        return exact_accuracy(run.model, splits_of(run).test, config.eval_eps)
    if name == f"pgd-restarts{RESTARTS}":
        return pgd_restarts(
            run.model, splits_of(run).test, config.eval_eps, steps=config.eval_steps, seed=config.seed + 7
        )
    if name == "calibration":
        margins = load_margins(run)
        if margins is None:
            raise ValueError(f"{run.path} has no margins.pt: only IMA and MMA runs have margins")
        return margin_calibration(
            run.model, splits_of(run).train, margins, eps_max=config.eps, method=config.method, seed=config.seed
        )
    if name == AUTOATTACK:
        return autoattack_analysis(run)
    if name == "halfway":
        from imalib.book.equilibrium import BALANCE_SAMPLES, halfway_ratios

        train = splits_of(run).train
        return halfway_ratios(run.model, train.inputs(), train.y, n_points=BALANCE_SAMPLES,
                              eps_max=EQUILIBRIUM_EPS_MAX)  # fmt: skip
    raise ValueError(
        f"unknown analysis {name!r}: use exact, pgd-restarts{RESTARTS}, calibration, autoattack or halfway"
    )


def cached_analysis(run: Run, name: str) -> dict[str, Any]:
    """The book's one cache: the analysis ``name`` of ``run``, read from its run directory or computed and
    stored there. ``name`` is ``exact``, ``pgd-restarts10``, ``calibration`` or ``autoattack``."""
    return RunCache(run.path).get(name, lambda: _compute(run, name))


def pgd_exact_rows(runs: Sequence[Run], eps: float) -> pd.DataFrame:
    """One row per run: its label, seed, the paper's PGD accuracy and the exact accuracy at ``eps``."""
    rows = []
    for run in runs:
        exact = cached_analysis(run, "exact")
        rows.append(
            {
                "label": run.config.label,
                "seed": run.config.seed,
                "pgd": run.record.accuracy_at(eps),
                "exact": dict(zip(exact["eps"], exact["accuracy"], strict=True))[eps],
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- pure functions of records
def witness_offsets(exact: dict[str, Any]) -> torch.Tensor:
    """Per test point, the L-inf offset of the nearest misclassified point the exact search found (inf: none)."""
    return torch.tensor([math.inf if v is None else v for v in exact["witness_offset"]], dtype=torch.float64)


def missed_by_pgd(
    pgd_robust: torch.Tensor, offsets: torch.Tensor, eval_eps: Sequence[float]
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
    for run, values in zip(runs, records, strict=False):
        for eps, value in zip(values["eps"], values[key], strict=False):
            rows.append({"label": run.config.label, "seed": run.config.seed, "eps": eps, key: value})
    return pd.DataFrame(rows)


def disagreement_figure(run: Run, eps: float, index: int) -> Figure:
    """One test point that PGD calls robust at ``eps`` and the exact search does not (its witness drawn)."""
    from imalib.exact import exact_linf_robust

    test = splits_of(run).test
    x, y = test.inputs()[index : index + 1], test.y[index : index + 1]
    found = exact_linf_robust(run.model, x, y, [eps], resolution=RESOLUTION)
    title = (
        f"{run.config.label}, noise {dict(run.config.data_params).get('noise', 0.1):g}, seed {run.config.seed}, "
        f"eps {eps:g}: PGD says robust, it is not"
    )
    return plot_disagreement(run.model, x, y, eps, found.witness[0], title=title)


Key = tuple[str, float, int]  # (method label, make_moons noise, seed)


def _mean_sd(values: list[float]) -> str:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def sweep_summary(
    clean: dict[Key, float],
    pgd: dict[Key, float],
    exact: dict[Key, float],
    restarts: dict[tuple[str, float], float],
    order: list[str],
    eps: float,
    restart_seed: int,
) -> dict[str, Any]:
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
        rows.append(
            {
                "method": label,
                "noise": level,
                "seeds": len(runs),
                "clean": _mean_sd([clean[k] for k in runs]),
                f"{eps:g} PGD": _mean_sd([pgd[k] for k in runs]),
                f"{eps:g} exact": _mean_sd([exact[k] for k in runs]),
                "PGD − exact (max over seeds)": f"{max(pgd[k] - exact[k] for k in runs):.4f}",
                f"{eps:g} PGD×20 (seed {restart_seed})": f"{restarts[(label, level)]:.4f}"
                if (label, level) in restarts
                else "–",
            }
        )
    worst = max(pgd, key=lambda key: pgd[key] - exact[key])
    rankings = []
    for level in sorted({level for _, level in groups}):
        labels = [label for label, lvl in groups if lvl == level]
        orders = {}
        for name, values in (("PGD", pgd), ("exact", exact)):
            means = {lab: sum(values[k] for k in groups[(lab, level)]) / len(groups[(lab, level)]) for lab in labels}
            orders[name] = " > ".join(sorted(labels, key=lambda lab: -means[lab]))
        same = "same order" if orders["PGD"] == orders["exact"] else "**different order**"
        rankings.append(f"noise {level:g}: PGD {orders['PGD']}; exact {orders['exact']} ({same})")
    return {"table": pd.DataFrame(rows).set_index("method"), "worst": worst, "rankings": rankings}


# ---------------------------------------------------------------------------------- the runs of the chapter
def table_runs(
    profile: str,
    seeds: Sequence[int],
    methods: list[str] | None,
    noise: float,
    *,
    method_params: dict[str, dict[str, Any]] | None = None,
    **where: Any,
) -> tuple[list[Run], list[Any]]:
    """The finished runs (and the missing configurations) of Table 1's rows over ``seeds`` at one make_moons
    noise. ``where`` is passed to :func:`imalib.experiments.available` (results_root, data_root, device, ...)."""
    configs = [
        c
        for s in seeds
        for c in table_configs(
            "moons", "linf", profile, seed=s, methods=methods, data_params={"noise": noise}, method_params=method_params
        )
    ]
    return available(configs, **where)


def sweep_runs(
    profile: str, seeds: Sequence[int], methods: list[str] | None, noise_levels: Sequence[float], **where: Any
) -> tuple[list[Run], list[Any]]:
    """Table 1's rows at every make_moons noise level of the sweep."""
    configs = [
        c
        for lvl in noise_levels
        for s in seeds
        for c in table_configs("moons", "linf", profile, seed=s, methods=methods, data_params={"noise": lvl})
    ]
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
        "m_profile": profile,
        "m_noise": noise,
        "m_seeds": ", ".join(str(s) for s in sorted(frame["seed"].unique())),
        "m_missing": "none" if not missing else ", ".join(f"{c.label} seed {c.seed}" for c in missing),
        "m_nseeds_min": int(seed_counts.min()),
        "m_table_ours": tables.mean_std_text(mean, std).rename_axis("method"),
        "m_table_side": tables.side_by_side(mean, paper).rename_axis("method"),
    }
    return TableOne(frame, mean, std, paper, order, glue)


def closeness(table: TableOne, profile: str) -> Glue:
    """Monotonicity of the measured curves, the monotone envelope's gap, and the curves beside the paper's."""
    frame, order = table.frame, table.order
    envelope_gap = float(
        (tables.mean_table(frame, "accuracy", order) - tables.mean_table(frame, "envelope", order)).abs().max().max()
    )
    return {
        "m_envelope_gap": format(envelope_gap, ".4f"),
        "m_rises": int(frame["rises"].sum()),
        "m_curves": plot_accuracy_curves(
            table.mean, table.paper, std=table.std, title=f"Moons, L-inf, profile {profile}"
        ),
    }


def boundaries_and_margins(runs: Sequence[Run], order: Sequence[str], seed: int) -> Glue:
    """Figure 6 (each method's decision boundary, first seed) and the IMA / MMA margin histograms."""
    seed0 = [r for label in order for r in runs if r.config.label == label and r.config.seed == seed]
    if not seed0:
        return {}
    test = splits_of(seed0[0]).test
    margin_runs = [r for r in runs if r.config.label in ("ima", "mma") and r.config.seed == seed]
    return {
        "m_boundaries": plot_decision_boundaries(seed0, test.inputs(), test.y),
        "m_hist": plot_margin_histograms(
            {r.config.label: m for r in margin_runs if (m := load_margins(r)) is not None}, 0.3
        ),
    }


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
            time_rows.append(
                {
                    "margin update": name,
                    "runs": len(group),
                    "mean training seconds": np.mean([r.record.train_seconds for r in group]),
                    "final mean margin": np.mean([r.record.final.mean_margin for r in group]),
                }
            )
    return {"m_modes": mode_text, "m_modes_time": pd.DataFrame(time_rows).set_index("margin update").round(3)}


def margin_step(
    runs: Sequence[Run], delta_runs: Sequence[Run], delta_missing: Sequence[Any], frame: pd.DataFrame
) -> Glue:
    """IMA with the paper's margin step 0.3/30 against the authors' code's 0.3/10, the others for reference."""
    paper_mode = [r for r in runs if r.config.label == "ima"]
    steps = tables.results_frame(paper_mode).assign(label="ima, Δ = 0.3/30 = 0.01 (paper's text)")
    if delta_runs:
        steps = pd.concat(
            [steps, tables.results_frame(delta_runs).assign(label="ima, Δ = 0.3/10 = 0.03 (authors' code)")]
        )
        for other in ("mma", "trades", "adv0.3"):
            steps = pd.concat([steps, frame[frame["label"] == other]])
    return {
        "m_delta": tables.mean_std_text(tables.mean_table(steps), tables.std_table(steps)).rename_axis("method"),
        "m_delta_missing": "none" if not delta_missing else ", ".join(f"seed {c.seed}" for c in delta_missing),
    }


@dataclass(frozen=True)
class ExactSection:
    mean: pd.DataFrame  # exact robust accuracy, mean over seeds
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
    return ExactSection(
        ex_mean,
        {
            "m_exact_table": triple.rename_axis("method"),
            "m_gap_table": gap.round(4).rename_axis("method"),
            "m_gap_max": format(float(gap.max().max()), ".4f"),
            "m_gap_min": format(float(gap.min().min()), ".4f"),
            "m_gap_restart_max": format(float((rs_mean - ex_mean).max().max()), ".4f"),
            "m_undecided": sum(sum(record["undecided"]) for record in exact_records),
            "m_spacing": format(exact_records[0]["spacing"], ".2e"),
            "m_exact_method": exact_records[0]["method"],
            "m_restarts": RESTARTS,
        },
    )


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
        calib_rows.append(
            {
                "method": run.config.label,
                "seed": run.config.seed,
                "mean stored": stored[ok].mean(),
                "mean exact": true[ok].mean(),
                "median stored/exact": float(np.median(stored[ok] / true[ok])),
                "share stored > 1.1 × exact": float((stored[ok] > 1.1 * true[ok]).mean()),
            }
        )
        if run.config.seed == seed:
            scatter[run.config.label] = (true, stored)
        if run.config.label == "ima":
            for name in ("bpgd_random_start", "bpgd_no_random_start"):
                found = np.array(cal[name]["found"])
                dist = np.array(cal[name]["distance"])
                sel = found & ok
                bpgd_rows.append(
                    {
                        "BPGD": name.replace("bpgd_", "").replace("_", " "),
                        "seed": run.config.seed,
                        "share found": found.mean(),
                        "median found / exact": float(np.median(dist[sel] / true[sel])) if sel.any() else float("nan"),
                        "mean abs(found − exact)": float(np.abs(dist[sel] - true[sel]).mean())
                        if sel.any()
                        else float("nan"),
                    }
                )
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

    def at(
        record: dict[str, Any], eps: float
    ) -> float:  # accuracy at eps in a record {"eps": [...], "accuracy": [...]}
        return dict(zip(record["eps"], record["accuracy"], strict=False))[eps]

    clean_at = {key(r): r.record.accuracy_at(0.0) for r in sweep}
    pgd_at = {key(r): r.record.accuracy_at(hard_eps) for r in sweep}
    exact_at = {key(r): at(cached_analysis(r, "exact"), hard_eps) for r in sweep}
    restart_at = {
        key(r)[:2]: at(cached_analysis(r, f"pgd-restarts{RESTARTS}"), hard_eps) for r in sweep if r.config.seed == seed
    }
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
        "m_sweep_missing": "none"
        if not missing
        else f"{len(missing)} runs (" + ", ".join(sorted({f"noise {c.data_params[0][1]}" for c in missing})) + ")",
        "m_sweep_rankings": rankings_table(sweep, hard_eps),
        "m_sweep_gap": f"{pgd_at[worst] - exact_at[worst]:.3f} ({worst[0]}, noise {worst[1]:g}, seed {worst[2]}: "
        f"PGD {pgd_at[worst]:.3f}, exact {exact_at[worst]:.3f})",
        "m_sweep_gap_offset": f"{float(offsets.median()):.3f}" if len(worst_missed) else "n/a",
        "m_sweep_gap_fig": fig,
        "m_ce_clean": "; ".join(f"noise {k:g}: {v:.4f}" for k, v in ce_clean.items()),
    }


def what_ran(runs: Sequence[Run]) -> Glue:
    """The settings every run shares, the hardware, and the summed training and evaluation time."""
    cfg = runs[0].config.to_dict()
    params = pd.DataFrame(
        {"value": {k: str(v) for k, v in cfg.items() if k not in ("method", "eps", "seed", "method_params")}}
    )
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
    generator = torch.Generator(device=x.device).manual_seed(0)
    result = bpgd(run.model, x, y, eps, norm="linf", clip=None, generator=generator)
    correct = run.model(x).argmax(1) == y
    candidates = (result.found & correct).nonzero().squeeze(1)
    pick = int(candidates[len(candidates) // 2])
    return {
        "bpgd_figure": plot_bpgd(run.model, x[pick : pick + 1], y[pick : pick + 1], eps),
        "bpgd_found_share": format(float(result.found[correct].float().mean()), ".3f"),
        "bpgd_eps": format(eps, "g"),
        "bpgd_profile": profile,
    }


# --------------------------------------------------------------------- the noise level the baselines pin down
BASELINES = ("ce", "adv0.3", "trades")  # the rows that do not depend on IMA or MMA


def noise_of(run: Run) -> float:
    """The make_moons noise a run trained on."""
    return float(dict(run.config.data_params).get("noise", 0.1))


@dataclass(frozen=True)
class NoiseInference:
    """Which make_moons noise the paper's baseline rows are consistent with.

    ``table``: one row per measured level, the largest |ours − paper| over eps (mean of seeds, the paper's
    PGD) of each baseline row and overall, and the seeds measured per row. ``complete``: the levels where
    every baseline has ``seeds_needed`` seeds; only they compete. ``best``: the minimiser among them;
    ``at_edge``: it is the smallest or largest complete level, so the minimum is not bracketed.
    """

    table: pd.DataFrame
    complete: list[float]
    incomplete: list[float]
    best: float
    at_edge: bool


def infer_noise(
    frame: pd.DataFrame, paper: pd.DataFrame, seeds_needed: int, baselines: Sequence[str] = BASELINES
) -> NoiseInference:
    """Pick the noise level whose baseline rows lie closest to the paper's (minimax over eps and rows).

    ``frame`` is :func:`imalib.tables.results_frame` of runs at several levels (column ``data_noise``);
    IMA and MMA rows in it are ignored, so the choice cannot favour either.
    """
    if "data_noise" not in frame.columns or not len(frame):
        raise ValueError(
            "infer_noise needs result rows with a make_moons noise (column data_noise): "
            "pass the runs of the noise sweep"
        )
    rows = []
    for level, group in frame[frame["label"].isin(baselines)].groupby("data_noise"):
        row: dict[str, Any] = {"noise": float(level)}
        seeds = group.groupby("label")["seed"].nunique()
        diff = tables.difference(tables.mean_table(group), paper).abs()
        for label in baselines:
            row[f"{label}: largest abs(ours − paper)"] = (
                float(diff.loc[label].max()) if label in diff.index else math.nan
            )
            row[f"{label} seeds"] = int(seeds.get(label, 0))
        row["largest over the baselines"] = float(diff.max().max())
        row["complete"] = all(row[f"{label} seeds"] >= seeds_needed for label in baselines)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("noise").sort_index()
    complete = [float(v) for v in table.index[table["complete"]]]
    incomplete = [float(v) for v in table.index[~table["complete"]]]
    if not complete:
        raise ValueError(
            f"no noise level has all of {', '.join(baselines)} with {seeds_needed} seeds: "
            f"train them first (levels seen: {list(table.index)})"
        )
    best = float(table.loc[complete, "largest over the baselines"].idxmin())
    at_edge = best in (min(complete), max(complete)) and len(complete) > 1
    return NoiseInference(table, complete, incomplete, best, at_edge)


def noise_inference(sweep: Sequence[Run], seeds: Sequence[int]) -> tuple[NoiseInference, Glue]:
    """:func:`infer_noise` on the sweep's runs, and its glue (the table shown, the chosen level, the edge)."""
    result = infer_noise(tables.results_frame(sweep), tables.paper_frame("moons", "linf"), len(seeds))
    seed_columns = [f"{label} seeds" for label in BASELINES]
    shown = result.table.drop(columns=["complete", *seed_columns]).copy()
    shown.columns = [c.replace(": largest abs(ours − paper)", "") for c in shown.columns]
    shown.insert(
        0,
        "seeds (" + " / ".join(BASELINES) + ")",
        [" / ".join(str(int(result.table.loc[i, c])) for c in seed_columns) for i in result.table.index],
    )
    shown.insert(0, "complete", ["yes" if c else "no" for c in result.table["complete"]])
    largest = result.table.loc[result.best, "largest over the baselines"]
    others = result.table.loc[[c for c in result.complete if c != result.best], "largest over the baselines"]
    return result, {
        "m_infer_table": shown.round(4).rename_axis("make_moons noise"),
        "m_infer_best": format(result.best, "g"),
        "m_infer_best_gap": format(float(largest), ".3f"),
        "m_infer_next_gap": format(float(others.min()), ".3f") if len(others) else "n/a",
        "m_infer_levels": ", ".join(format(v, "g") for v in result.complete),
        "m_infer_incomplete": "none" if not result.incomplete else ", ".join(format(v, "g") for v in result.incomplete),
        "m_infer_edge": (
            "the smallest measured level, so the minimum is not bracketed: a smaller noise may fit "
            "the paper better still"
            if result.best == min(result.complete)
            else "the largest measured level, so the minimum is not bracketed"
        )
        if result.at_edge
        else "inside the measured range, so the minimum is bracketed",
    }


# --------------------------------------------------------------------- headline: PGD, exact, the rankings
def headline(table: TableOne, exact_mean: pd.DataFrame, eps: float = 0.3) -> Glue:
    """The first screen: PGD beside the paper, the exact accuracy, the ranking under each at ``eps``."""
    side = tables.side_by_side(table.mean, table.paper)
    side.columns = [f"{e:g} PGD / paper (diff)" for e in side.columns]
    at = (
        pd.DataFrame(
            {
                "paper": table.paper[eps],
                "PGD (ours)": table.mean[eps],
                "± sd": table.std[eps],
                "exact (ours)": exact_mean[eps],
            }
        )
        .reindex(table.order)
        .round(3)
    )
    at["PGD − exact"] = (at["PGD (ours)"] - at["exact (ours)"]).round(3)
    return {
        "m_head_side": side.rename_axis("method"),
        "m_head_03": at.rename_axis("method"),
        "m_rank_paper": " > ".join(ranking_of(table.paper[eps].reindex(table.order))),
        "m_rank_pgd": " > ".join(ranking_of(table.mean[eps])),
        "m_rank_exact": " > ".join(ranking_of(exact_mean[eps])),
    }


def ranking_of(values: pd.Series) -> list[str]:
    """Labels from the highest value to the lowest."""
    return list(values.dropna().sort_values(ascending=False, kind="stable").index)


# --------------------------------------------------------------------------------- AutoAttack, read only
AUTOATTACK = "autoattack"


def autoattack_analysis(run: Run) -> dict[str, Any]:
    """APGD-CE + FAB on the run's test set at every eval eps, with the worst case of it and the stored PGD.

    This is what ``analysis-autoattack.json`` holds; the book never calls it (it only reads the caches), the
    lead's batch job does, through :func:`cached_analysis` (``name="autoattack"``).
    """
    from imalib.autoattack import evaluate_autoattack, worst_case
    from imalib.evaluate import RobustnessResult

    config = run.config
    test = splits_of(run).test
    x, y = test.x, test.y
    res = evaluate_autoattack(
        run.model, x, y, norm=config.norm, eps_list=list(config.eval_eps), clip=None, num_classes=2, seed=0
    )
    pgd_robust = load_torch(Path(run.path) / "robust.pt").bool()
    pgd = RobustnessResult(eps=tuple(config.eval_eps), robust=pgd_robust, norm=config.norm, seconds=0.0)
    both = worst_case(pgd, res.robustness)
    aa = res.robustness.robust
    k_all = range(len(config.eval_eps))
    return {
        "attack": "autoattack",
        "settings": res.settings.to_dict(),
        "eps": list(config.eval_eps),
        "accuracy": res.robustness.accuracy,
        "worst_of_both": both.accuracy,
        "broken_by_autoattack_only": [(pgd_robust[k] & ~aa[k]).nonzero().squeeze(1).tolist() for k in k_all],
        "broken_by_pgd_only": [(~pgd_robust[k] & aa[k]).nonzero().squeeze(1).tolist() for k in k_all],
        "seconds": res.robustness.seconds,
    }


def stored_analysis(run: Run, name: str) -> dict[str, Any] | None:
    """The analysis ``name`` of ``run`` if its record is stored, else None (never computes)."""
    path = RunCache(run.path).path(name)
    return dict(json.loads(path.read_text())) if path.exists() else None


def autoattack_rows(sweep: Sequence[Run], eps: float = 0.3) -> pd.DataFrame:
    """Per run with a stored AutoAttack record: PGD, AutoAttack, worst of both and exact accuracy at ``eps``."""
    rows = []
    for run in sweep:
        aa = stored_analysis(run, AUTOATTACK)
        exact = stored_analysis(run, "exact")
        if aa is None or exact is None:
            continue
        k = list(aa["eps"]).index(eps)
        rows.append(
            {
                "method": run.config.label,
                "noise": noise_of(run),
                "seed": run.config.seed,
                "PGD": run.record.accuracy_at(eps),
                "AutoAttack": aa["accuracy"][k],
                "worst of both": aa["worst_of_both"][k],
                "exact": dict(zip(exact["eps"], exact["accuracy"], strict=False))[eps],
            }
        )
    return pd.DataFrame(rows, columns=["method", "noise", "seed", "PGD", "AutoAttack", "worst of both", "exact"])


def autoattack_summary(rows: pd.DataFrame, order: Sequence[str] = ORDER) -> pd.DataFrame:
    """Mean ± sd over seeds per (noise, method), and the share of the PGD − exact gap the worst case closes."""
    out = []
    rank = {label: i for i, label in enumerate(order)}
    groups = sorted(rows.groupby(["noise", "method"]), key=lambda kv: (kv[0][0], rank.get(kv[0][1], 99)))
    for (level, label), group in groups:
        cells: dict[str, Any] = {"noise": level, "method": label, "seeds": len(group)}
        for column in ("PGD", "AutoAttack", "worst of both", "exact"):
            cells[column] = _mean_sd(list(group[column]))
        gap = float((group["PGD"] - group["exact"]).sum())
        closed = float((group["PGD"] - group["worst of both"]).sum())
        cells["gap closed"] = f"{closed / gap:.0%}" if gap > 0 else "no gap"
        out.append(cells)
    return pd.DataFrame(out).set_index(["noise", "method"])


def autoattack_section(sweep: Sequence[Run], eps: float = 0.3) -> tuple[pd.DataFrame, Glue]:
    rows = autoattack_rows(sweep, eps)
    have = {(r.config.label, noise_of(r), r.config.seed) for r in sweep if stored_analysis(r, AUTOATTACK)}
    pending = len(sweep) - len(have)
    gap = float((rows["PGD"] - rows["exact"]).sum()) if len(rows) else 0.0
    closed = float((rows["PGD"] - rows["worst of both"]).sum()) / gap if gap > 0 else math.nan
    shown = autoattack_summary(rows).reset_index().set_index("noise") if len(rows) else "(no AutoAttack record yet)"
    return rows, {
        "m_aa_table": shown,
        "m_aa_runs": len(rows),
        "m_aa_pending": pending,
        "m_aa_closed": f"{closed:.0%}" if math.isfinite(closed) else "n/a",
    }


# ------------------------------------------------------------------------ margin calibration below the cap
def calibration_points(runs: Sequence[Run]) -> pd.DataFrame:
    """Per training point of the calibration records (IMA, MMA): stored margin, exact distance, method, seed.

    Read only: runs without a stored ``analysis-calibration.json`` are skipped.
    """
    rows = []
    for run in runs:
        if run.config.label not in ("ima", "mma"):
            continue
        cal = stored_analysis(run, "calibration")
        if cal is None:
            continue
        rows.append(
            pd.DataFrame(
                {
                    "method": run.config.label,
                    "seed": run.config.seed,
                    "stored": cal["stored"],
                    "exact": cal["exact"],
                    "eps_max": cal["eps_max"],
                }
            )
        )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["method", "seed", "stored", "exact", "eps_max"])
    )


def calibration_below_cap(runs: Sequence[Run]) -> pd.DataFrame:
    """On the points whose exact distance lies in (0, eps_max), where no cap can hide an error: per method the
    share of points there, the median stored / exact ratio and the shares over- and underestimated by 10 %."""
    points = calibration_points(runs)
    out = []
    for method, group in points.groupby("method"):
        below = group[(group["exact"] > 0) & (group["exact"] < group["eps_max"])]
        ratio = below["stored"] / below["exact"]
        out.append(
            {
                "method": method,
                "points": len(group),
                "share below the cap": len(below) / len(group),
                "median stored / exact": float(ratio.median()),
                "share over by > 10 %": float((ratio > 1.1).mean()),
                "share under by > 10 %": float((ratio < 0.9).mean()),
            }
        )
    return pd.DataFrame(out).set_index("method") if out else pd.DataFrame()


# ------------------------------------------------------------------------------- the numbers findings quote
PARAMS: dict[str, Any] = {}  # filled below: the Moons chapter's papermill parameters


def _params() -> dict[str, Any]:
    from imalib.checks import NOTEBOOK_SPEC

    return {**NOTEBOOK_SPEC, "noise": (float, None), "detail_noise": float}


PARAMS.update(_params())


def findings(table: TableOne, exact_mean: pd.DataFrame, eps: float = 0.3) -> Glue:
    """The values the chapter's finding sentences quote at ``eps`` (glued as ``m_f_*``): IMA's lead under PGD,
    its seed spread, its rank under the exact evaluation, and each method's PGD − exact gap."""
    pgd, sd, ex = table.mean[eps], table.std[eps], exact_mean[eps]
    gap = (pgd - ex).reindex(table.order)
    others = [label for label in table.order if label != "ima"]
    runner = max(others, key=lambda label: pgd[label]) if others else "ima"
    exact_order = ranking_of(ex)
    next_gap = max((label for label in others), key=lambda label: gap[label]) if others else "ima"
    return {
        "m_f_ima_pgd": f"{pgd['ima']:.3f}",
        "m_f_ima_sd": f"{sd['ima']:.3f}",
        "m_f_runner": runner,
        "m_f_runner_pgd": f"{pgd[runner]:.3f}",
        "m_f_lead": f"{pgd['ima'] - pgd[runner]:.3f}",
        "m_f_ima_exact": f"{ex['ima']:.3f}",
        "m_f_ima_exact_rank": exact_order.index("ima") + 1,
        "m_f_n": len(exact_order),
        "m_f_exact_first": exact_order[0],
        "m_f_exact_first_value": f"{ex[exact_order[0]]:.3f}",
        "m_f_ima_gap": f"{gap['ima']:.3f}",
        "m_f_next_gap_label": next_gap,
        "m_f_next_gap": f"{gap[next_gap]:.3f}",
        "m_f_mma_diff": f"{pgd['mma'] - table.paper.loc['mma', eps]:+.3f}",
        "m_f_mma_exact_diff": f"{ex['mma'] - table.paper.loc['mma', eps]:+.3f}",
        "m_f_trades_clean": f"{table.mean.loc['trades', 0.0]:.3f}",
        "m_f_trades_clean_paper": f"{table.paper.loc['trades', 0.0]:.3f}",
    }


def per_seed_gap(runs: Sequence[Run], label: str, eps: float = 0.3) -> list[float]:
    """PGD − exact at ``eps`` for each seed's ``label`` run (the exact records are read through the cache)."""
    out = []
    for run in runs:
        if run.config.label == label:
            exact = cached_analysis(run, "exact")
            out.append(run.record.accuracy_at(eps) - dict(zip(exact["eps"], exact["accuracy"], strict=False))[eps])
    return out


def mma_gap_by_noise(sweep: Sequence[Run], eps: float = 0.3) -> pd.DataFrame:
    """Our MMA minus the paper's at ``eps`` at every noise level, under PGD and exactly (means over seeds)."""
    paper = tables.paper_frame("moons", "linf").loc["mma", eps]
    rows = []
    for level in sorted({noise_of(r) for r in sweep}):
        runs = [r for r in sweep if noise_of(r) == level and r.config.label == "mma"]
        if not runs:
            continue
        pgd = [r.record.accuracy_at(eps) for r in runs]
        exact = [
            dict(zip(e["eps"], e["accuracy"], strict=False))[eps] for e in (cached_analysis(r, "exact") for r in runs)
        ]
        rows.append(
            {
                "noise": level,
                "seeds": len(runs),
                "MMA PGD − paper": float(np.mean(pgd)) - paper,
                "MMA exact − paper": float(np.mean(exact)) - paper,
            }
        )
    return pd.DataFrame(rows).set_index("noise").round(3) if rows else pd.DataFrame()


def rankings_table(sweep: Sequence[Run], eps: float = 0.3) -> pd.DataFrame:
    """Per noise level, the methods ordered by mean accuracy at ``eps`` under PGD and exactly."""
    rows = []
    for level in sorted({noise_of(r) for r in sweep}):
        runs = [r for r in sweep if noise_of(r) == level]
        frame = (
            pd.DataFrame(
                [
                    {
                        "label": r.config.label,
                        "pgd": r.record.accuracy_at(eps),
                        "exact": dict(zip(e["eps"], e["accuracy"], strict=False))[eps],
                    }
                    for r in runs
                    for e in [cached_analysis(r, "exact")]
                ]
            )
            .groupby("label")
            .mean()
        )
        order_pgd, order_exact = ranking_of(frame["pgd"]), ranking_of(frame["exact"])
        rows.append(
            {
                "noise": level,
                "PGD": " > ".join(order_pgd),
                "exact": " > ".join(order_exact),
                "same order": "yes" if order_pgd == order_exact else "no",
            }
        )
    return pd.DataFrame(rows).set_index("noise")


def middle_line(runs: Sequence[Run]) -> pd.DataFrame:
    """Is the boundary on the "middle line"? Per method (IMA, MMA) with calibration records: the median exact
    distance to the boundary of each class's training points (pooled over seeds) and their ratio (1: centred)."""
    rows = []
    for run in runs:
        cal = stored_analysis(run, "calibration") if run.config.label in ("ima", "mma") else None
        if cal is None:
            continue
        y = splits_of(run).train.y[: len(cal["exact"])].numpy()
        rows.append(pd.DataFrame({"method": run.config.label, "class": y, "exact": cal["exact"]}))
    if not rows:
        return pd.DataFrame()
    points = pd.concat(rows, ignore_index=True)
    medians = points.groupby(["method", "class"])["exact"].median().unstack("class")
    medians.columns = [f"median distance, class {c}" for c in medians.columns]
    medians["ratio (smaller / larger)"] = medians.min(axis=1) / medians.max(axis=1)
    return medians.round(3)


def ablations(profile: str, seeds: Sequence[int], noise: float, table_frame: pd.DataFrame, **where: Any) -> Glue:
    """Algorithm 2 as written against fused, and the paper's margin step against the authors' code's, at one
    noise level (the runs are trained when missing and ``where`` allows it)."""
    runs, _ = table_runs(profile, seeds, None, noise, **where)
    fused, _ = table_runs(profile, seeds, ["ima"], noise, method_params={"ima": {"margin_mode": "fused"}}, **where)
    delta, delta_missing = table_runs(profile, seeds, ["ima"], noise, method_params={"ima": {"delta": 0.03}}, **where)
    frame = tables.results_frame(runs)
    return {**margin_modes(runs, fused), **margin_step(runs, delta, delta_missing, frame)}


def checker(profile: str) -> Callable[..., None]:
    """:func:`imalib.book.findings.check` for the profiles whose records the chapter's sentences describe;
    at ``smoke`` (seconds of training, numbers that mean nothing) a check that only evaluates nothing."""
    from imalib.book.findings import check

    def unchecked(condition: bool, claim: str, **numbers: object) -> None:
        del condition, claim, numbers

    return unchecked if profile == "smoke" else check
