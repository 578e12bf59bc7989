"""PGD beside AutoAttack, from result records: the tables, rankings and warnings of the robustness chapter.

Every function here but the last two is a pure function of typed records
(:class:`imalib.records.ResultRecord`) returning a pandas frame or a summary. A record
without an ``autoattack`` entry (not measured yet) contributes its PGD numbers
and NaN for AutoAttack and the worst of both.

- :func:`attack_frame`: one row per (record, eps): PGD, AutoAttack, worst of both;
- :func:`robustness_table`: per (dataset, norm), mean and sd over seeds per method and eps;
- :func:`seed_table`: one attack of it as 'mean ± sd' cells with each row's number of seeds;
- :func:`rankings`: the order of the methods under PGD and under the worst of both, per eps;
- :func:`overstated`: where PGD overstates a method by more than the resolution;
- :func:`masking_signs`: accuracy rising with eps, AutoAttack beating PGD by more than the resolution;
- :func:`attack_summary`: the numbers the chapter's sentences about one table quote;
- :func:`standard_check`: the custom AutoAttack set against the standard set on a subset (reads run files);
- :func:`broken_by_autoattack`: a few images PGD called robust and AutoAttack broke (reads run files).

The resolution of an accuracy a on n test images is two binomial standard
errors, 2 sqrt(a (1 - a) / n), and never less than one image (1 / n).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from imalib.book.findings import standard_error
from imalib.records import ResultRecord

ATTACKS = ("pgd", "autoattack", "worst_of_both")


def resolution(accuracy: float, n: int) -> float:
    """Two binomial standard errors of ``accuracy`` on ``n`` images, and at least one image (1 / n)."""
    return max(2.0 * standard_error(accuracy, n), 1.0 / n)


def measured(records: Iterable[ResultRecord]) -> bool:
    """True when at least one record has AutoAttack outcomes."""
    return any(record.autoattack is not None for record in records)


def attack_frame(records: Iterable[ResultRecord]) -> pd.DataFrame:
    """One row per (record, eps): dataset, norm, profile, label, seed, n_test, eps, pgd, autoattack, worst_of_both."""
    rows: list[dict[str, Any]] = []
    for record in records:
        entry = record.autoattack
        for k, eps in enumerate(record.eps):
            rows.append(
                {
                    "dataset": record.dataset,
                    "norm": record.norm,
                    "profile": record.profile,
                    "label": record.label,
                    "seed": record.seed,
                    "n_test": record.n_test,
                    "eps": eps,
                    "pgd": record.accuracy[k],
                    "autoattack": math.nan if entry is None or entry.accuracy is None else entry.accuracy[k],
                    "worst_of_both": math.nan if entry is None else entry.worst_of_both[k],
                }
            )
    columns = ["dataset", "norm", "profile", "label", "seed", "n_test", "eps", *ATTACKS]
    return pd.DataFrame(rows, columns=columns)


def _one(records: Sequence[ResultRecord], dataset: str, norm: str) -> pd.DataFrame:
    frame = attack_frame(r for r in records if r.dataset == dataset and r.norm == norm)
    if frame.empty:
        raise ValueError(f"no records for {dataset}/{norm}: collect them with imalib.records.collect")
    return frame


def robustness_table(records: Sequence[ResultRecord], dataset: str, norm: str) -> pd.DataFrame:
    """Per method and eps: mean and sd over seeds of PGD, AutoAttack and the worst of both, and the seeds.

    Columns: label, eps, n_seeds, n_test, then ``<attack>`` (mean) and
    ``<attack>_sd`` (NaN with one seed) for each attack. Methods keep the order
    of the records.
    """
    frame = _one(records, dataset, norm)
    order = list(dict.fromkeys(frame["label"]))
    grouped = frame.groupby(["label", "eps"], sort=False)
    table = grouped.agg(
        n_seeds=("seed", "nunique"),
        n_test=("n_test", "min"),
        **{a: (a, "mean") for a in ATTACKS},
        **{f"{a}_sd": (a, "std") for a in ATTACKS},
    )
    table = table.reset_index()
    table["label"] = pd.Categorical(table["label"], categories=order, ordered=True)
    return table.sort_values(["label", "eps"]).reset_index(drop=True).assign(label=lambda t: t["label"].astype(str))


def _cell(mean: float, sd: float, digits: int) -> str:
    """'mean ± sd', the mean alone where sd is NaN (one seed), 'not measured' where the mean is NaN."""
    if math.isnan(mean):
        return "not measured"
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A :func:`robustness_table` for reading: methods as rows, (eps, attack) as columns, 'mean ± sd' cells."""

    out = pd.DataFrame(
        {
            (f"{eps:g}", attack): [_cell(m, s, digits) for m, s in zip(part[attack], part[f"{attack}_sd"], strict=True)]
            for eps, part in table.groupby("eps", sort=True)
            for attack in ATTACKS
        },
        index=list(dict.fromkeys(table["label"])),
    )
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["eps", "attack"])
    return out


def compact_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A :func:`robustness_table` in one cell per (method, eps): 'PGD / AutoAttack / worst of both' (means)."""

    def number(value: float) -> str:
        return "–" if math.isnan(value) else f"{value:.{digits}f}"

    out = pd.DataFrame(
        {
            f"{eps:g}": [" / ".join(number(row[a]) for a in ATTACKS) for _, row in part.iterrows()]
            for eps, part in table.groupby("eps", sort=True)
        },
        index=list(dict.fromkeys(table["label"])),
    )
    out.index.name = "PGD / AutoAttack / worst of both"
    return out


def seed_table(table: pd.DataFrame, attack: str = "worst_of_both", digits: int = 3) -> pd.DataFrame | None:
    """One ``attack`` of a :func:`robustness_table` as 'mean ± sd' over seeds: methods as rows, eps as columns,
    the number of seeds first; a row with one seed shows its value alone. None when no row has two seeds."""
    if int(table["n_seeds"].max()) < 2:
        return None

    labels = list(dict.fromkeys(table["label"]))
    out = pd.DataFrame(
        {
            f"{eps:g}": [_cell(m, s, digits) for m, s in zip(part[attack], part[f"{attack}_sd"], strict=True)]
            for eps, part in table.groupby("eps", sort=True)
        },
        index=labels,
    )
    seeds = table.groupby("label", sort=False)["n_seeds"].min()
    out.insert(0, "seeds", [int(seeds[label]) for label in labels])
    out.index.name = f"{attack.replace('_', ' ')}, mean ± sd over seeds"
    return out


def rankings(records: Sequence[ResultRecord], dataset: str, norm: str) -> pd.DataFrame:
    """Per eps > 0: the methods from best to worst under PGD and under the worst of both (mean over seeds).

    Columns: eps, pgd, worst_of_both (labels joined by ' > '), changed (the two
    orders differ; False where the worst of both is not measured for every method).
    """
    table = robustness_table(records, dataset, norm)
    rows = []
    for eps, part in table[table["eps"] > 0].groupby("eps", sort=True):
        pgd = " > ".join(part.sort_values("pgd", ascending=False, kind="stable")["label"])
        complete = not part["worst_of_both"].isna().any()
        worst = (
            " > ".join(part.sort_values("worst_of_both", ascending=False, kind="stable")["label"])
            if complete
            else "not measured"
        )
        rows.append({"eps": eps, "pgd": pgd, "worst_of_both": worst, "changed": complete and pgd != worst})
    return pd.DataFrame(rows, columns=["eps", "pgd", "worst_of_both", "changed"])


def overstated(records: Sequence[ResultRecord], dataset: str, norm: str) -> pd.DataFrame:
    """Where PGD's accuracy exceeds the worst of both by more than the resolution at n_test (mean over seeds).

    Columns: label, eps, seeds, pgd, worst_of_both, gap, smallest_gap (the
    smallest of the per-seed gaps: the worst of both is never above PGD on one
    model, so a positive smallest gap means PGD overstated the method on every
    seed), resolution, n_test; empty when PGD overstates no method (or nothing
    is measured).
    """
    table = robustness_table(records, dataset, norm).dropna(subset=["worst_of_both"])
    frame = _one(records, dataset, norm).dropna(subset=["worst_of_both"])
    per_seed = (frame["pgd"] - frame["worst_of_both"]).groupby([frame["label"], frame["eps"]]).min()
    smallest = [float(per_seed[(label, eps)]) for label, eps in zip(table["label"], table["eps"], strict=True)]
    gap = table["pgd"] - table["worst_of_both"]
    limit = [resolution(a, int(n)) for a, n in zip(table["pgd"], table["n_test"], strict=True)]
    out = table.assign(gap=gap, smallest_gap=smallest, resolution=limit, seeds=table["n_seeds"])
    out = out[out["gap"] > out["resolution"]]
    columns = ["label", "eps", "seeds", "pgd", "worst_of_both", "gap", "smallest_gap", "resolution", "n_test"]
    return out[columns].reset_index(drop=True)


def masking_signs(records: Iterable[ResultRecord]) -> pd.DataFrame:
    """Signs of gradient masking, one row per (record, eps, sign).

    The signs: 'pgd rises' / 'autoattack rises' (accuracy higher than at the
    previous, smaller eps: a stronger attack at a larger eps can only break
    more) and 'autoattack beats pgd' (AutoAttack's accuracy below PGD's by more
    than the resolution: PGD's gradients mislead it). Columns: dataset, norm,
    label, seed, eps, sign, before (the previous eps's value, or PGD's), value,
    resolution.
    """
    rows = []
    for record in records:
        entry = record.autoattack
        series = {"pgd": record.accuracy}
        alone = None if entry is None else entry.accuracy  # None for a cascade entry: AutoAttack ran on PGD's survivors
        if alone is not None:
            series["autoattack"] = alone
        for name, values in series.items():
            for k in range(1, len(values)):
                if values[k] > values[k - 1]:
                    rows.append((record, record.eps[k], f"{name} rises", values[k - 1], values[k]))
        if alone is not None:
            for k, eps in enumerate(record.eps):
                if record.accuracy[k] - alone[k] > resolution(record.accuracy[k], record.n_test):
                    rows.append((record, eps, "autoattack beats pgd", record.accuracy[k], alone[k]))
    columns = ["dataset", "norm", "label", "seed", "eps", "sign", "before", "value", "resolution"]
    return pd.DataFrame(
        [
            {
                "dataset": r.dataset,
                "norm": r.norm,
                "label": r.label,
                "seed": r.seed,
                "eps": eps,
                "sign": sign,
                "before": before,
                "value": value,
                "resolution": resolution(before, r.n_test),
            }
            for r, eps, sign, before, value in rows
        ],
        columns=columns,
    )


@dataclass(frozen=True)
class AttackSummary:
    """What the chapter's sentences about one table quote: over the rows with AutoAttack, at eps > 0."""

    measured: tuple[str, ...]  # labels with AutoAttack outcomes
    unmeasured: tuple[str, ...]
    largest_gap: float  # PGD minus the worst of both, the largest over (label, eps); nan without AutoAttack
    largest_label: str
    largest_eps: float
    overstated: tuple[tuple[str, float], ...]  # (label, eps) beyond the resolution
    changed_eps: tuple[float, ...]  # eps where the ranking under the worst of both differs from PGD's
    complete: bool  # every row measured, so the rankings can be compared
    autoattack_beats_pgd: int  # (record, eps) pairs where AutoAttack alone is below PGD beyond the resolution


def attack_summary(records: Sequence[ResultRecord], dataset: str, norm: str) -> AttackSummary:
    """The numbers behind the AutoAttack findings of one table (see :class:`AttackSummary`); all empty
    (and NaN) when the table has no records."""
    if not any(r.dataset == dataset and r.norm == norm for r in records):
        return AttackSummary((), (), math.nan, "", math.nan, (), (), False, 0)
    table = robustness_table(records, dataset, norm)
    attacked = table[table["eps"] > 0]
    done = attacked.dropna(subset=["worst_of_both"])
    labels = list(dict.fromkeys(table["label"]))
    measured_labels = tuple(label for label in labels if label in set(done["label"]))
    if done.empty:
        largest = (math.nan, "", math.nan)
    else:
        row = done.assign(gap=done["pgd"] - done["worst_of_both"]).sort_values("gap", kind="stable").iloc[-1]
        largest = (float(row["gap"]), str(row["label"]), float(row["eps"]))
    over = overstated(records, dataset, norm)
    ranks = rankings(records, dataset, norm)
    chosen = [r for r in records if r.dataset == dataset and r.norm == norm]
    signs = masking_signs(chosen)
    return AttackSummary(
        measured=measured_labels,
        unmeasured=tuple(label for label in labels if label not in measured_labels),
        largest_gap=largest[0],
        largest_label=largest[1],
        largest_eps=largest[2],
        overstated=tuple((str(a), float(b)) for a, b in zip(over["label"], over["eps"], strict=True)),
        changed_eps=tuple(float(e) for e in ranks.loc[ranks["changed"], "eps"]),
        complete=len(measured_labels) == len(labels),
        autoattack_beats_pgd=int((signs["sign"] == "autoattack beats pgd").sum()) if not signs.empty else 0,
    )


def not_measured_command(records: Iterable[ResultRecord], results_root: str = "results") -> str | None:
    """The command that adds AutoAttack to the first record lacking it, or None when all have it."""
    for record in records:
        if record.autoattack is None:
            return (
                f"python -m imalib evaluate --attack autoattack {results_root}/{record.dataset}/"
                f"{record.label}-{record.norm}-{record.config_hash}"
            )
    return None


def chapter_values(
    records: Sequence[ResultRecord], dataset: str, norm: str, *, results_root: str = "results"
) -> dict[str, object]:
    """Glue-ready values of the AutoAttack section for (dataset, norm), named ``<dataset>_<norm>_aa_<what>``.

    ``status`` says how many rows have AutoAttack (or 'not measured yet: <command>'); ``table`` is
    :func:`compact_table`; ``rankings`` the orders per eps;
    ``overstated`` and ``masking`` the frames of :func:`overstated` and :func:`masking_signs` (or a
    sentence saying there are none). Numbers only: the chapter's prose stays in the chapter.
    """
    chosen = [r for r in records if r.dataset == dataset and r.norm == norm]
    key = f"{dataset}_{norm}_aa"
    if not chosen:
        empty = "no runs of this table yet"
        return {f"{key}_{what}": empty for what in ("status", "table", "seeds", "rankings", "overstated", "masking")}
    with_aa = sum(r.autoattack is not None for r in chosen)
    command = not_measured_command(chosen, results_root)
    status = f"AutoAttack measured on {with_aa} of {len(chosen)} runs" if with_aa else "not measured yet"
    if command is not None:
        status += (
            f"; to add it to a run whose weights exist: `{command}` (the image weights are not committed: "
            f"`python -m imalib reproduce RUN_DIR --keep ROOT` retrains a run with AutoAttack on)"
        )
    full = robustness_table(chosen, dataset, norm)
    table = compact_table(full)
    spread = seed_table(full)
    ranks = rankings(chosen, dataset, norm).set_index("eps")
    over = overstated(chosen, dataset, norm).set_index("label").round(3)
    masking = masking_signs(chosen).drop(columns=["dataset", "norm"]).round(3)
    return {
        f"{key}_status": status,
        f"{key}_table": table,
        f"{key}_seeds": spread if spread is not None else "one training seed per row: no seed spread to show",
        f"{key}_rankings": ranks,
        f"{key}_overstated": over
        if not over.empty
        else ("none beyond the resolution" if with_aa else "not measured yet"),
        f"{key}_masking": masking.set_index("label") if not masking.empty else "none",
    }


def standard_check(runs: Sequence[Any]) -> pd.DataFrame:
    """The check of the check: the custom set against the package's full standard set on the same images.

    ``runs`` are :class:`imalib.runs.Run` objects or run directories; those
    without an ``autoattack_standard`` entry, or whose custom entry is a cascade (AutoAttack alone not
    measured: evaluate with ``--aa-full``), are skipped. One row per (run,
    eps): label, norm, seed, eps, n_images, custom and standard (robust accuracy on
    those images), only_standard (images the standard set broke and the custom
    set did not) and only_custom (the reverse: their random starts differ).
    """
    from pathlib import Path

    from imalib.records import RESULT_FILE, read_record
    from imalib.runs import load_autoattack

    rows = []
    for run in runs:
        path = Path(getattr(run, "path", run))
        record = read_record(path / RESULT_FILE)
        entry = record.autoattack_standard
        custom = load_autoattack(path)
        standard = load_autoattack(path, "standard")
        full = record.autoattack is not None and record.autoattack.mode == "full"
        if entry is None or custom is None or standard is None or not full:
            continue
        images = list(entry.indices) if entry.indices is not None else list(range(record.n_test))
        for j, eps in enumerate(entry.eps):
            mine = custom[record.eps.index(eps), images]
            theirs = standard[j]
            rows.append(
                {
                    "label": record.label,
                    "norm": record.norm,
                    "seed": record.seed,
                    "eps": eps,
                    "n_images": len(images),
                    "custom": float(mine.float().mean()),
                    "standard": float(theirs.float().mean()),
                    "only_standard": int((mine & ~theirs).sum()),
                    "only_custom": int((theirs & ~mine).sum()),
                }
            )
    columns = ["label", "norm", "seed", "eps", "n_images", "custom", "standard", "only_standard", "only_custom"]
    return pd.DataFrame(rows, columns=columns)


def broken_by_autoattack(runs: Sequence[Any], eps: float | None = None, *, count: int = 4) -> pd.DataFrame:
    """Up to ``count`` test images per run that PGD left robust and AutoAttack broke (at ``eps``, or any).

    ``runs`` are :class:`imalib.runs.Run` objects or run directories; the
    images come from the ``autoattack_examples.pt`` that the run's evaluation
    wrote (no weights needed). A run evaluated without AutoAttack raises with
    the command that adds it. Per run, one image per noise level comes before
    a second one at any level. Columns: label, norm, eps, index (in the run's test
    set), y, adversarial_prediction, image (the clean input), adversarial (the
    attacked input), distance (the norm of their difference).
    """
    from pathlib import Path

    from imalib.records import RESULT_FILE, read_record
    from imalib.runs import EXAMPLES_FILE, load_examples

    rows = []
    for run in runs:
        path = Path(getattr(run, "path", run))
        record = read_record(path / RESULT_FILE)
        examples = load_examples(path)
        if record.autoattack is None or examples is None:
            raise ValueError(
                f"{path} has no {EXAMPLES_FILE}: run 'python -m imalib evaluate --attack autoattack {path}' "
                f"(it needs the run's weights: train it again if they are gone)"
            )
        # one image per noise level first, then a second one per level, so that a few rows span the levels
        rank = [examples.eps[:j].count(level) for j, level in enumerate(examples.eps)]
        order = sorted(range(len(examples)), key=lambda j: (rank[j], examples.eps[j]))
        chosen = [j for j in order if eps is None or examples.eps[j] == eps][:count]
        for j in sorted(chosen, key=lambda j: (examples.eps[j], rank[j])):
            level = examples.eps[j]
            rows.append(
                {
                    "label": record.label,
                    "norm": record.norm,
                    "eps": level,
                    "index": int(examples.index[j]),
                    "y": int(examples.y[j]),
                    "adversarial_prediction": int(examples.prediction[j]),
                    "image": examples.clean[j],
                    "adversarial": examples.adversarial[j],
                    "distance": float(examples.distance[j]),
                }
            )
    columns = ["label", "norm", "eps", "index", "y", "adversarial_prediction", "image", "adversarial", "distance"]
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "ATTACKS",
    "AttackSummary",
    "attack_summary",
    "attack_frame",
    "broken_by_autoattack",
    "chapter_values",
    "compact_table",
    "format_table",
    "masking_signs",
    "measured",
    "not_measured_command",
    "overstated",
    "rankings",
    "resolution",
    "robustness_table",
    "seed_table",
    "standard_check",
]
