"""The image chapters' helpers, the equilibrium checks, the Reproducing page's tables and the executor's hygiene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest

from imalib.book import chapter, equilibrium
from imalib.book.execute import ROOT, hide_injected, portable
from imalib.paper import PaperTable, Row


def test_rising_rows_are_computed_from_the_papers_tables():
    assert set(chapter.rising_rows("svhn", "linf")) == {"trades", "adv0.1"}
    assert set(chapter.rising_rows("covid", "linf")) == {"trades", "adv0.2", "adv0.3"}
    assert chapter.rising_rows("fashion_mnist", "linf") == {}
    steps = chapter.rising_rows("svhn", "linf")["adv0.1"]
    assert all(before < after and e0 < e1 for e0, e1, before, after in steps)
    text = chapter.rising_text("svhn", "linf")
    assert "`trades`" in text and "`adv0.1`" in text and chapter.rising_text("fashion_mnist", "l2") == "none"


def test_a_rise_in_an_altered_table_is_found(monkeypatch):
    table = PaperTable(9, "toy", "linf", (0.0, 0.1, 0.2), (Row("ce", 0.0, (0.9, 0.5, 0.1)),
                                                          Row("adv", 0.1, (0.8, 0.4, 0.45))))
    monkeypatch.setattr(chapter, "paper_table", lambda dataset, norm: table)
    assert chapter.rising_rows("toy", "linf") == {"adv0.1": [(0.1, 0.2, 0.4, 0.45)]}


def _record(folder: Path, dataset: str, label: str, profile: str, train: float, evaluate: float,
            autoattack: float | None = None) -> None:
    folder.mkdir(parents=True)
    extra = {} if autoattack is None else {"autoattack": {"seconds": autoattack}}
    (folder / "result.json").write_text(json.dumps({
        "dataset": dataset, "norm": "linf", "profile": profile, "label": label, "seed": 0,
        "train_seconds": train, "eval_seconds": evaluate, "environment": {"torch_threads": 1, "cuda": None},
        **extra}))


def test_costs_have_plain_columns_and_totals_sum_the_records(tmp_path):
    _record(tmp_path / "moons" / "a", "moons", "ce", "cpu", 1800.0, 1800.0)
    _record(tmp_path / "moons" / "b", "moons", "ce", "cpu", 3600.0, 0.0)
    _record(tmp_path / "fashion_mnist" / "c", "fashion_mnist", "ima", "cpu", 3600.0, 1800.0, autoattack=1800.0)
    _record(tmp_path / "fashion_mnist" / "d", "fashion_mnist", "ima", "smoke", 36.0, 0.0)
    costs = chapter.run_costs(tmp_path)
    assert list(costs.columns[:3]) == ["norm", "profile", "method"]
    assert not any(isinstance(value, tuple) for value in costs.index)        # no raw tuples on the page
    assert costs.loc[costs["method"] == "ce", "train_min"].item() == 45.0    # mean of 30 and 60 minutes
    assert costs.loc[costs["method"] == "ce", "autoattack_min"].isna().all()
    assert costs.loc[(costs["method"] == "ima") & (costs["profile"] == "cpu"), "autoattack_min"].item() == 30.0
    totals = chapter.cost_totals(tmp_path)
    assert totals["r_records"] == "4"
    assert totals["r_total_cpu"] == "4.0 h" and totals["r_total_smoke"] == "0.0 h"
    assert totals["r_total_cpu_moons"] == "2.0 h (2 runs)"
    assert chapter.run_costs(tmp_path / "none") == "no result records yet"


def test_profile_table_and_chapter_parameters_come_from_the_sources():
    profiles = chapter.profile_table()
    cpu = profiles[(profiles.index == "fashion_mnist") & (profiles["profile"] == "cpu")].iloc[0]
    scale = chapter.SCALES[("fashion_mnist", "cpu")]
    assert (cpu["epochs"], cpu["training samples"], cpu["test samples"]) == (scale.epochs, scale.n_train, scale.n_test)
    parameters = chapter.chapter_parameters(("fashion_mnist", "reproducing"))
    assert "`results_root`" in list(parameters.loc["fashion_mnist", "parameter"])
    assert set(parameters.index) == {"fashion_mnist", "reproducing"}


def test_the_data_root_never_reaches_the_page(tmp_path):
    root = tmp_path / "somewhere" / "data"
    message = chapter.data_status("svhn", root)
    assert message is not None and str(tmp_path) not in message and "$IMALIB_DATA_ROOT/SVHN" in message
    assert "<" not in message      # the loaders' "<data root>" would be swallowed by Markdown as an HTML tag


def test_the_executor_passes_repository_paths_relative_and_hides_the_injected_cell(tmp_path):
    notebooks = ROOT / "notebooks"
    shown = portable({"results_root": str(ROOT / "results"), "data_root": str(tmp_path), "profile": "cpu"}, notebooks)
    assert shown["results_root"] == str(Path("..") / "results")     # inside the repository: relative
    assert shown["data_root"] == str(tmp_path) and shown["profile"] == "cpu"   # elsewhere: left alone
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["injected-parameters"]}),
                                               nbformat.v4.new_code_cell("y = 2")])
    path = tmp_path / "n.ipynb"
    nbformat.write(notebook, path)
    hide_injected(path)
    cells = nbformat.read(path, 4).cells
    assert cells[0].metadata.tags == ["injected-parameters", "remove-cell"] and "remove-cell" not in cells[1].metadata.get("tags", [])


def test_with_a_free_slope_the_noisy_samples_prefer_a_flat_model_and_the_clean_loss_pins_it():
    rng = np.random.default_rng(0)
    same = rng.normal(0.0, 0.05, 4000)
    slopes = np.geomspace(1e-3, 1e3, 61)
    shifts = np.linspace(-0.1, 0.1, 21)
    fixed = equilibrium.boundary_loss(0.0, same[:2000], same[2000:])
    _, _, free = equilibrium.best_on_grid(lambda a, b: equilibrium.boundary_loss(a, same[:2000], same[2000:], b),
                                          shifts, slopes)
    assert free < fixed and abs(free - 2 * math.log(2)) < 1e-3 and fixed > 1.43
    clean_i, clean_j = rng.normal(-0.5, 0.1, 2000), rng.normal(0.5, 0.1, 2000)
    shift, slope, _ = equilibrium.best_on_grid(
        lambda a, b: equilibrium.clean_loss(a, clean_i, clean_j, b) + equilibrium.boundary_loss(a, same[:2000], same[2000:], b),
        shifts, slopes)
    assert 1 < slope < 1e3 and abs(shift) <= 0.02


def test_unequal_class_shares_move_the_minimiser():
    rng = np.random.default_rng(1)
    same = rng.normal(0.0, 0.05, 2000)
    shifts = np.linspace(-0.3, 0.3, 601)
    balanced = [equilibrium.weighted_loss(float(s), same[:1000], same[1000:], 0.5) for s in shifts]
    skewed = [equilibrium.weighted_loss(float(s), same[:1000], same[1000:], 0.75) for s in shifts]
    assert abs(shifts[int(np.argmin(balanced))]) < 0.01 and shifts[int(np.argmin(skewed))] > 0.05


def test_with_three_classes_the_bound_depends_on_the_third_class():
    rng = np.random.default_rng(2)
    same = rng.normal(0.0, 0.05, 2000)
    shifts = np.linspace(-0.2, 0.2, 401)
    low, high = (equilibrium.three_class(same[:1000], same[1000:], third, shifts) for third in (-6.0, 1.0))
    for result in (low, high):
        assert abs(result["shift"]) < 0.01 and result["loss"] >= result["bound"]
    assert high["bound"] - low["bound"] > 1.0 and high["p3"] > low["p3"]
    assert low["bound"] == pytest.approx(2 * math.log(2), abs=0.01)


@pytest.mark.skipif(not (ROOT / "results" / "fashion_mnist").is_dir(), reason="no committed Fashion-MNIST records")
def test_the_fashion_mnist_conclusion_fails_the_build_on_altered_records(tmp_path):
    """Copy the committed cpu records, make IMA fall below ce at one noise level: the chapter must refuse."""
    import shutil

    import papermill

    from imalib.book.execute import execute
    from imalib.data.base import data_root

    if not (data_root() / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST files not in the data root")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "fashion_mnist", results / "fashion_mnist",
                    ignore=shutil.ignore_patterns("model.pt"))
    for record in results.glob("fashion_mnist/ima-linf-*/result.json"):   # every seed's record
        data = json.loads(record.read_text())
        data["accuracy"][1] = 0.0                      # IMA at the first noise level, now below ce
        data["envelope"] = [min(data["accuracy"][:k + 1]) for k in range(len(data["accuracy"]))]
        data["rises"] = [False] + [b > a for a, b in zip(data["accuracy"], data["accuracy"][1:])]
        record.write_text(json.dumps(data))
    with pytest.raises(papermill.PapermillExecutionError, match="IMA is above ce at every noise level"):
        execute("fashion_mnist", {"profile": "cpu", "results_root": str(results), "data_root": str(data_root()),
                                  "train_missing": False, "workers": 1}, target=tmp_path / "out.ipynb")


def test_seed_words_of_a_table_with_several_seeds():
    from imalib.profiles import table_configs

    configs = [c for s in (1, 2) for c in table_configs("fashion_mnist", "linf", "cpu", seed=s)[:2]]
    assert chapter.missing_text(configs, several=True) == "ima (seeds 1, 2), mma (seeds 1, 2)"
    assert chapter.missing_text(configs[:1], several=False) == "ima" and chapter.missing_text([], several=True) == "none"
    import pandas as pd

    counts = pd.Series({"ima": 3, "mma": 3, "ce": 1})
    assert chapter.seed_counts(counts) == "3 training seeds for `ima`, `mma`; 1 training seed for `ce`"
    assert chapter.seed_counts(pd.Series({"ima": 1})) == "1 training seed per row"
    with pytest.raises(ValueError, match="distinct training seeds"):
        chapter.table_section("fashion_mnist", "linf", "cpu", results_root=".", data_root=None,
                              train_missing=False, seeds=[0, 0])


def test_seed_spread_finds_the_widest_cell_among_rows_with_seeds():
    import pandas as pd

    mean = pd.DataFrame({0.0: [0.8, 0.7, 0.8], 0.1: [0.5, 0.3, 0.4]}, index=["ima", "trades", "ce"])
    sd = pd.DataFrame({0.0: [0.2, 0.0, 0.0], 0.1: [0.01, 0.06, 0.5]}, index=mean.index)
    section = {"mean": mean, "sd": sd, "n_seeds": pd.Series({"ima": 3, "trades": 2, "ce": 1}), "n_test": 300}
    spread = chapter.seed_spread(section)
    # eps 0 and the one-seed row are left out; trades at 0.1 is the widest and above its binomial SE (0.026)
    assert spread["rows"] == ["ima", "trades"] and spread["cells"] == 2
    assert (spread["label"], spread["eps"], spread["max_sd"]) == ("trades", 0.1, 0.06)
    assert spread["se_there"] == pytest.approx(math.sqrt(0.21 / 300)) and spread["above_se"] == 1
    none = chapter.seed_spread(section | {"n_seeds": pd.Series({"ima": 1, "trades": 1, "ce": 1})})
    assert none["rows"] == [] and math.isnan(none["max_sd"])
    assert chapter.seed_spread({"runs": [], "missing": []})["cells"] == 0   # a table without runs
