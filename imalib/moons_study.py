"""The analyses of the Moons chapter that go beyond the paper, cached in each run directory.

Moons inputs are 2-D, so robust accuracy and each point's distance to the
decision boundary can be computed exactly (:mod:`imalib.exact`). Each analysis
below is computed once per run and stored as ``analysis-<name>.json`` beside
the run's ``result.json``; the book reads the stored values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch

from imalib.attacks import bpgd
from imalib.data.base import Splits
from imalib.data.moons import load_moons
from imalib.evaluate import evaluate_robustness
from imalib.exact import exact_linf_distance, exact_linf_robust
from imalib.io import write_json
from imalib.runs import Run

RESTARTS = 10          # per loss: 10 cross-entropy + 10 margin-loss PGD runs, 20 attacks in all
CALIBRATION_SAMPLES = 2000
RESOLUTION = 1e-3


def cached(run: Run, name: str, compute: Callable[[], dict[str, Any]], refresh: bool = False) -> dict[str, Any]:
    """Load ``analysis-<name>.json`` from the run directory, or compute and store it (atomically)."""
    path = Path(run.path) / f"analysis-{name}.json"
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    value = compute()
    write_json(path, value)
    return value


def splits_of(run: Run) -> Splits:
    """The exact train / validation / test sets the run used."""
    config = run.config
    params = dict(config.data_params)
    return load_moons(config.n_train or 20000, params.get("n_val", 2000), config.n_test or 2000,
                      noise=params.get("noise", 0.1), seed=config.seed)


def summary(runs: list[Run], analysis: Callable[[Run], dict[str, Any]], key: str = "accuracy"):  # type: ignore[no-untyped-def]
    """Long table (label, seed, eps, value) of one analysis over runs."""
    import pandas as pd

    rows = []
    for run in runs:
        values = analysis(run)
        for eps, value in zip(values["eps"], values[key]):
            rows.append({"label": run.config.label, "seed": run.config.seed, "eps": eps, key: value})
    return pd.DataFrame(rows)


def exact_accuracy(run: Run) -> dict[str, Any]:
    """Exact L-inf robust accuracy at the run's noise levels, with the certificate counts."""
    def compute() -> dict[str, Any]:
        test = splits_of(run).test
        result = exact_linf_robust(run.model, test.inputs(), test.y, run.config.eval_eps, resolution=RESOLUTION)
        return {"eps": list(result.eps), "accuracy": result.accuracy, "undecided": result.undecided,
                "spacing": result.spacing, "method": result.method, "seconds": result.seconds,
                "witness_offset": [float(v) if math.isfinite(float(v)) else None for v in result.witness_offset]}
    return cached(run, "exact", compute)


def pgd_restarts(run: Run, restarts: int = RESTARTS) -> dict[str, Any]:
    """The paper's attack with ``restarts`` random starts per loss (worst case per sample)."""
    def compute() -> dict[str, Any]:
        test = splits_of(run).test
        result = evaluate_robustness(run.model, test.inputs(), test.y, norm="linf", eps_list=run.config.eval_eps,
                                     steps=run.config.eval_steps, restarts=restarts, clip=None,
                                     batch_size=len(test), seed=run.config.seed + 7)
        return {"eps": list(result.eps), "accuracy": result.accuracy, "restarts_per_loss": restarts,
                "seconds": result.seconds}
    return cached(run, f"pgd-restarts{restarts}", compute)


def witness_offsets(run: Run) -> torch.Tensor:
    """Per test point, the L-inf offset of the nearest misclassified point the exact search found (inf: none)."""
    offsets = exact_accuracy(run)["witness_offset"]
    return torch.tensor([math.inf if v is None else v for v in offsets], dtype=torch.float64)


def margin_calibration(run: Run) -> dict[str, Any]:
    """Stored margins E(x) of IMA / MMA against each training point's exact L-inf distance to the boundary.

    Uses the first CALIBRATION_SAMPLES training points (the training order is
    already random). For IMA it also runs BPGD at the stored margins with and
    without its random start and records the distances it finds.
    """
    def compute() -> dict[str, Any]:
        margins = run.margins
        if margins is None:
            raise ValueError(f"{run.path} has no margins.pt: only IMA and MMA runs have margins")
        train = splits_of(run).train
        idx = torch.arange(min(CALIBRATION_SAMPLES, len(train)))
        x, y = train.inputs(idx), train.y[idx]
        cap = max(run.config.eps * 1.5, float(margins.max()) * 1.1)
        exact = exact_linf_distance(run.model, x, y, max_radius=cap, resolution=RESOLUTION)
        out: dict[str, Any] = {"stored": margins[idx].tolist(), "exact": exact.tolist(), "cap": cap,
                               "eps_max": run.config.eps}
        if run.config.method == "ima":
            for name, rand_init in (("bpgd_random_start", True), ("bpgd_no_random_start", False)):
                result = bpgd(run.model, x, y, margins[idx].float(), norm="linf", clip=None, rand_init=rand_init,
                              generator=torch.Generator().manual_seed(run.config.seed))
                out[name] = {"found": result.found.tolist(), "distance": result.distance.tolist()}
        return out
    return cached(run, "calibration", compute)


def missed_by_pgd(run: Run) -> list[tuple[int, float, int]]:
    """(eps index, eps, test index) of every point the paper's PGD called robust although the exact search
    found a misclassified point inside its eps-square."""
    pgd_robust = torch.load(Path(run.path) / "robust.pt", weights_only=True)
    offsets = witness_offsets(run)
    missed = []
    for k, eps in enumerate(run.config.eval_eps):
        if eps == 0:
            continue
        hits = pgd_robust[k] & (offsets <= eps + 1e-9)
        missed.extend((k, float(eps), i) for i in hits.nonzero().flatten().tolist())
    return missed


def disagreement_figure(run: Run, eps: float, index: int):  # type: ignore[no-untyped-def]
    """The figure of one test point that PGD and the exact evaluation disagree on (see figures.plot_disagreement)."""
    from imalib.figures import plot_disagreement

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
    import pandas as pd

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
