"""The book's analyses as pure functions: Moons sections, the cache, the palette, the paper's tables."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from imalib import paper, tables
from imalib.book import moons
from imalib.book.plots import OTHER_COLOR, color_of, marker_of
from imalib.config import RunConfig
from imalib.profiles import table_configs
from imalib.records import ResultRecord
from imalib.runs import Run

EPS = (0.0, 0.1, 0.3)


def fake_run(label: str, seed: int, accuracy: list[float], tmp_path: Path | None = None) -> Run:
    """A finished Moons run record without a model: enough for every function of records."""
    method, eps = ("adv", 0.3) if label == "adv0.3" else (label, 0.0 if label == "ce" else 0.3)
    config = RunConfig.from_dict({"dataset": "moons", "method": method, "norm": "linf", "eps": eps,
                                  "profile": "smoke", "epochs": 1, "batch_size": 8, "eval_eps": EPS, "seed": seed})
    record = ResultRecord.from_json({
        "dataset": "moons", "method": method, "label": config.label, "norm": "linf", "profile": "smoke",
        "seed": seed, "config_hash": config.hash(), "config": config.to_dict(), "data": "made up",
        "n_train": 8, "n_test": 4, "eps": list(EPS), "accuracy": accuracy, "envelope": accuracy,
        "rises": [False] * len(EPS), "history": [{"epoch": 1, "train_acc": 1.0, "seconds": 1.0, "mean_margin": 0.1}],
        "margins": None, "train_seconds": 60.0, "eval_seconds": 30.0, "seconds_note": "made up",
        "environment": {"python": "3", "torch": "2", "numpy": "2", "sklearn": "1", "machine": "x86_64",
                        "processor": "", "cpu_count": 2, "torch_threads": 1, "cuda": None}})
    return Run(path=tmp_path or Path("."), model=torch.nn.Identity(), config=config, record=record)


def test_missed_by_pgd_lists_exactly_the_points_pgd_wrongly_called_robust():
    # PGD's verdicts per (eps, point) and the exact search's nearest misclassified offset per point
    pgd_robust = torch.tensor([[True, True, True, False],
                               [True, True, False, False],
                               [True, True, False, False]])
    offsets = moons.witness_offsets({"witness_offset": [0.05, None, 0.2, 0.25]})
    assert math.isinf(float(offsets[1]))
    # eps 0 is never checked; at 0.1 and 0.3 point 0 is missed; point 2 is only robust at 0.1 (< its 0.2 offset)
    assert moons.missed_by_pgd(pgd_robust, offsets, EPS) == [(1, 0.1, 0), (2, 0.3, 0)]


def test_sweep_summary_finds_the_worst_gap_and_a_ranking_flip():
    pgd = {("ima", 0.05, 0): 0.80, ("ima", 0.05, 1): 0.90, ("adv", 0.05, 0): 0.82, ("adv", 0.05, 1): 0.82,
           ("ima", 0.1, 0): 0.70, ("adv", 0.1, 0): 0.60}
    exact = {("ima", 0.05, 0): 0.70, ("ima", 0.05, 1): 0.60, ("adv", 0.05, 0): 0.80, ("adv", 0.05, 1): 0.81,
             ("ima", 0.1, 0): 0.69, ("adv", 0.1, 0): 0.60}
    clean = {key: 1.0 for key in pgd}
    out = moons.sweep_summary(clean, pgd, exact, {("ima", 0.05): 0.65}, ["ima", "adv"], 0.3, restart_seed=0)
    assert out["worst"] == ("ima", 0.05, 1)
    table = out["table"]
    assert list(table.index) == ["ima", "adv", "ima", "adv"] and list(table["noise"]) == [0.05, 0.05, 0.1, 0.1]
    assert table.iloc[0]["0.3 PGD"] == "0.850 ± 0.071" and table.iloc[0]["PGD − exact (max over seeds)"] == "0.3000"
    assert table.iloc[0]["0.3 PGD×20 (seed 0)"] == "0.6500" and table.iloc[1]["0.3 PGD×20 (seed 0)"] == "–"
    assert out["rankings"][0] == "noise 0.05: PGD ima > adv; exact adv > ima (**different order**)"
    assert out["rankings"][1].endswith("(same order)")
    with pytest.raises(ValueError, match="same runs"):
        moons.sweep_summary(clean, pgd, {}, {}, ["ima", "adv"], 0.3, restart_seed=0)


def test_run_cache_computes_once_and_then_reads_the_stored_record(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"accuracy": [0.5]}

    cache = moons.RunCache(tmp_path)
    assert cache.get("exact", compute) == {"accuracy": [0.5]}
    assert json.loads((tmp_path / "analysis-exact.json").read_text()) == {"accuracy": [0.5]}
    assert cache.get("exact", compute) == {"accuracy": [0.5]} and len(calls) == 1


def test_cached_analysis_rejects_an_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown analysis 'nope'"):
        moons.cached_analysis(fake_run("ce", 0, [1.0, 0.9, 0.5], tmp_path), "nope")


def two_seed_table():
    runs = [fake_run("ima", 0, [1.0, 0.95, 0.80]), fake_run("ima", 1, [1.0, 0.93, 0.84]),
            fake_run("ce", 0, [1.0, 0.90, 0.50]), fake_run("ce", 1, [1.0, 0.88, 0.60])]
    return runs, moons.table_one(runs, [], "smoke", 0.1)


def test_table_one_orders_rows_as_the_paper_and_averages_over_seeds():
    _, table = two_seed_table()
    assert table.order == ["ima", "ce"]
    assert table.mean.loc["ima", 0.3] == pytest.approx(0.82) and table.std.loc["ce", 0.3] == pytest.approx(0.0707, abs=1e-4)
    glue = table.glue
    assert glue["m_seeds"] == "0, 1" and glue["m_missing"] == "none" and glue["m_nseeds_min"] == 2
    assert glue["m_table_ours"].index.name == "method" and glue["m_table_ours"].loc["ima", 0.3] == "0.820 ± 0.028"
    # the paper's Table 1 has these two rows at eps 0.1 and 0.3 (its other columns are not in our records)
    assert glue["m_table_side"].loc["ce", 0.3] == "0.550 / 0.606 (-0.056)"


def test_closeness_reports_monotonicity_and_draws_the_curves():
    _, table = two_seed_table()
    glue = moons.closeness(table, "smoke")
    assert glue["m_envelope_gap"] == "0.0000" and glue["m_rises"] == 0 and "m_curves" in glue
    assert not any(name.startswith("m_cmp_") for name in glue)    # no machine-written comparison sentences


def baseline_frame(rows: dict[float, dict[str, list[float]]]) -> pd.DataFrame:
    """A results frame: per noise level, per label, one accuracy per seed at eps 0 and 0.3."""
    out = []
    for level, labels in rows.items():
        for label, values in labels.items():
            for seed, value in enumerate(values):
                for eps, acc in ((0.0, 1.0), (0.3, value)):
                    out.append({"label": label, "seed": seed, "eps": eps, "accuracy": acc, "data_noise": level})
    return pd.DataFrame(out)


def test_infer_noise_uses_the_baselines_only_and_says_when_the_minimum_is_at_an_edge():
    paper = pd.DataFrame({0.0: [1.0, 1.0, 1.0, 1.0], 0.3: [0.6, 0.8, 0.8, 0.9]},
                         index=["ce", "adv0.3", "trades", "ima"])
    rows = {0.05: {"ce": [0.6, 0.6], "adv0.3": [0.8, 0.8], "trades": [0.79, 0.79], "ima": [0.1, 0.1]},
            0.1: {"ce": [0.5, 0.5], "adv0.3": [0.8, 0.8], "trades": [0.8, 0.8], "ima": [0.9, 0.9]},
            0.2: {"ce": [0.3, 0.3], "adv0.3": [0.7, 0.7], "trades": [0.7, 0.7], "ima": [0.9, 0.9]},
            0.025: {"ce": [0.6], "adv0.3": [0.8], "trades": [0.8], "ima": [0.9]}}
    result = moons.infer_noise(baseline_frame(rows), paper, seeds_needed=2)
    assert result.best == 0.05 and result.at_edge          # IMA's bad rows at 0.05 do not count
    assert result.complete == [0.05, 0.1, 0.2] and result.incomplete == [0.025]
    assert result.table.loc[0.1, "largest over the baselines"] == pytest.approx(0.1)
    rows[0.025] = {"ce": [0.5, 0.5], "adv0.3": [0.7, 0.7], "trades": [0.8, 0.8]}
    bracketed = moons.infer_noise(baseline_frame(rows), paper, seeds_needed=2)
    assert bracketed.best == 0.05 and not bracketed.at_edge
    with pytest.raises(ValueError, match="no noise level has all of ce, adv0.3, trades with 3 seeds"):
        moons.infer_noise(baseline_frame(rows), paper, seeds_needed=3)


def test_autoattack_summary_measures_the_share_of_the_gap_closed():
    rows = pd.DataFrame([
        {"method": "ima", "noise": 0.05, "seed": 0, "PGD": 0.9, "AutoAttack": 0.85, "worst of both": 0.8, "exact": 0.5},
        {"method": "ima", "noise": 0.05, "seed": 1, "PGD": 0.8, "AutoAttack": 0.8, "worst of both": 0.7, "exact": 0.6},
        {"method": "ce", "noise": 0.05, "seed": 0, "PGD": 0.5, "AutoAttack": 0.5, "worst of both": 0.5, "exact": 0.5}])
    table = moons.autoattack_summary(rows)
    assert table.loc[(0.05, "ima"), "gap closed"] == "33%"   # (0.1 + 0.1) / (0.4 + 0.2)
    assert table.loc[(0.05, "ce"), "gap closed"] == "no gap" and list(table.index.get_level_values(1)) == ["ima", "ce"]


def test_calibration_below_cap_ignores_the_capped_points(tmp_path):
    runs = []
    for label, stored in (("ima", [0.3, 0.2, 0.1]), ("mma", [0.5, 0.3, 0.1])):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "analysis-calibration.json").write_text(json.dumps(
            {"stored": stored, "exact": [0.9, 0.2, 0.05], "eps_max": 0.3, "cap": 0.45}))
        runs.append(fake_run(label, 0, [1.0, 0.9, 0.8], tmp_path=folder))
    table = moons.calibration_below_cap(runs)
    assert table.loc["ima", "share below the cap"] == pytest.approx(2 / 3)       # 0.9 is above the cap
    assert table.loc["ima", "share over by > 10 %"] == pytest.approx(0.5)        # 0.1 against 0.05
    assert table.loc["mma", "share over by > 10 %"] == pytest.approx(1.0)        # 0.3 against 0.2, 0.1 against 0.05
    assert moons.stored_analysis(runs[0], "autoattack") is None                  # read only: nothing computed


def test_margin_modes_and_what_ran_read_the_records():
    runs, _ = two_seed_table()
    modes = moons.margin_modes(runs, [])
    assert list(modes["m_modes"].index) == ["ima (paper mode)"] and modes["m_modes_time"].loc["paper", "runs"] == 2
    ran = moons.what_ran(runs)
    assert ran["m_train_total"] == "4.0" and ran["m_eval_total"] == "2.0" and "2 CPU cores" in ran["m_env"]


def test_one_colour_and_marker_per_method_whatever_the_figure():
    labels = [row.label for table in paper.TABLES.values() for row in table.rows]
    colours = {label: color_of(label) for label in labels}
    assert all(color_of(label) == colours[label] for label in labels)       # a function of the label alone
    assert len(set(colours.values())) == len(set(labels))                   # distinct labels, distinct colours
    assert OTHER_COLOR not in colours.values() and color_of("something else") == OTHER_COLOR
    assert marker_of("adv0.3") == marker_of("adv5") != marker_of("ima")


def test_the_paper_tables_are_stated_once_and_drive_the_configurations():
    assert [t.number for t in paper.TABLES.values()] == [1, 2, 3, 4, 5, 6]
    for (dataset, norm), table in paper.TABLES.items():
        assert len(set(table.labels)) == len(table.rows)
        configs = table_configs(dataset, norm, "smoke")
        assert [c.label for c in configs] == list(table.labels) and all(c.eval_eps == table.eps for c in configs)
        frame = tables.paper_frame(dataset, norm)
        assert list(frame.columns) == list(table.eps) and frame.loc[table.rows[0].label].tolist() == list(table.rows[0].reported)
    covid = {c.label: c for c in table_configs("covid", "linf", "smoke")}
    assert (covid["ce"].optimizer, covid["ce"].weight_decay) == ("adamw", 0.01) and covid["ima"].optimizer == "adam"
    with pytest.raises(KeyError, match="no table for dataset='moons' with norm='l2'"):
        paper.paper_table("moons", "l2")
    with pytest.raises(ValueError, match="2 accuracies for 3 noise levels"):
        paper.PaperTable(9, "moons", "linf", EPS, (paper.Row("ima", 0.3, (1.0, 0.5)),))


def imports_at_module_level(path: Path) -> set[str]:
    """The imalib modules a file imports when it is loaded (imports inside functions excluded)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If):   # `if TYPE_CHECKING:` blocks are not run
            continue
    return {name for name in names if name.startswith("imalib")}


def test_no_module_of_imalib_is_in_an_import_circle():
    """Loading a module never comes back to it (imports inside functions, run later, are not counted)."""
    root = Path(__file__).resolve().parent.parent / "imalib"
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: {m for m in imports_at_module_level(path) if m in modules and m != name}
             for name, path in modules.items()}
    assert {"imalib.book.moons", "imalib.paper", "imalib.tables"} <= set(graph)
    assert "imalib.paper" in graph["imalib.profiles"]          # the graph sees real edges
    for start, targets in graph.items():
        seen, stack = set(), [(m, [start, m]) for m in targets]
        while stack:
            current, path = stack.pop()
            assert current != start, "import circle: " + " -> ".join(path)
            if current not in seen:
                seen.add(current)
                stack.extend((m, [*path, m]) for m in graph[current])
