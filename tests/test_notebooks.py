"""Every chapter runs end to end at the smoke profile (papermill), on real or generated data.

The chapters are MyST-Markdown notebooks (``notebooks/<name>.md``, jupytext); they are the single
source, so there is no paired ``.ipynb`` to keep in sync.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_data_svhn_covid import make_covid_tree, write_svhn_mat

from imalib.book.execute import NOTEBOOKS, ROOT, execute, to_notebook
from imalib.data.base import data_root

SMALL_COVID = {"expected_counts": [12, [10]], "n_test_per_class": 2, "n_val_per_class": 1, "image_size": 64}
os.environ["OMP_NUM_THREADS"] = "1"  # the notebook kernels inherit it: one thread per process, as in conftest


def glued(path: Path) -> dict[str, str]:
    """name -> text of every glued value in an executed notebook."""
    values = {}
    for cell in nbformat.read(path, 4).cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = output["data"]
                values[name] = data.get("application/papermill.record/text/markdown",
                                         data.get("application/papermill.record/text/plain", ""))
    return values


def run(name: str, tmp_path: Path, **parameters) -> dict[str, str]:
    base = {"profile": "smoke", "results_root": str(tmp_path / "results"), "workers": 1, "train_missing": True}
    base.update(parameters)
    target = execute(name, base, target=tmp_path / f"{name}.ipynb")
    return glued(target)


def test_every_notebook_is_tested():
    assert set(NOTEBOOKS) == {"verdict", "method", "equilibrium", "moons", "fashion_mnist", "svhn", "covid", "reproducing"}


def test_each_chapter_is_one_text_notebook_with_a_jupytext_header_and_parameters():
    folder = ROOT / "notebooks"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(f"{n}.md" for n in NOTEBOOKS)
    for name in NOTEBOOKS:
        text = (folder / f"{name}.md").read_text()
        assert text.startswith("---\njupytext:") and "format_name: myst" in text and "kernelspec:" in text, name
        cells = to_notebook(folder / f"{name}.md").cells
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "hide-input" in tagged[0].metadata["tags"], name
        code = "\n".join(c.source for c in cells if c.cell_type == "code")
        assert "sys.path" not in code and "def " not in code, f"{name}: analysis code belongs in imalib.book"
    moons = [c.source for c in to_notebook(folder / "moons.md").cells if c.cell_type == "code"]
    assert sum(1 for source in moons for line in source.splitlines() if line.strip()) <= 60


def test_a_missing_chapter_is_named_with_the_ones_that_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="the chapters are verdict.md, method.md"):
        execute("nope", {}, source=tmp_path / "nope.md", target=tmp_path / "nope.ipynb")


def test_papermill_runs_a_converted_chapter_with_a_parameter(tmp_path):
    """The documented command line: jupytext converts a chapter, papermill runs it with -p parameters."""
    bin_dir = Path(sys.executable).parent
    converted = tmp_path / "reproducing.ipynb"
    subprocess.run([str(bin_dir / "jupytext"), "--to", "ipynb", "-o", str(converted),
                    str(ROOT / "notebooks" / "reproducing.md")], check=True, capture_output=True)
    executed = tmp_path / "out.ipynb"
    empty = tmp_path / "results"
    empty.mkdir()
    subprocess.run([str(bin_dir / "papermill"), str(converted), str(executed), "-p", "results_root", str(empty),
                    "--cwd", str(ROOT / "notebooks"), "-k", "python3"], check=True, capture_output=True)
    values = glued(executed)
    assert values["r_costs"] == "no result records yet"       # the parameter reached the chapter
    injected = [c for c in nbformat.read(executed, 4).cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(empty) in injected[0].source


def test_method_and_equilibrium(tmp_path):
    values = run("method", tmp_path)
    assert "bpgd_figure" in values and float(values["bpgd_found_share"]) > 0
    values = run("equilibrium", tmp_path, seeds=[0])
    assert abs(float(values["eq_best_same"])) < 0.02
    assert float(values["eq_min_gap"]) >= 0
    assert "median imbalance" in values["eq_trained_table"] and int(values["eq_trained_rank"]) in range(1, 6)


def test_moons_smoke(tmp_path):
    values = run("moons", tmp_path, seeds=[0], noise_levels=[0.1])
    assert "m_table_side" in values and "m_exact_table" in values and "m_calib" in values
    assert all(label in values["moons_rand"] for label in ("rand0.1", "rand0.3", "ce", "adv0.3"))
    for label in ("ima", "mma", "trades", "adv0.3", "ce"):
        assert label in values["m_table_ours"]
    result_files = list((tmp_path / "results" / "moons").glob("*/result.json"))
    labels = sorted(json.loads(f.read_text())["label"] for f in result_files)
    # five methods + IMA in fused mode + IMA with the code's margin step (noise 0.1); the rand section's three
    # rand rows, ce and adv0.3 (noise 0.05)
    assert len(result_files) == 12 and [label for label in labels if label.startswith("rand")] == [
        "rand0.1", "rand0.2", "rand0.3"]
    record = json.loads(result_files[0].read_text())
    assert record["profile"] == "smoke" and len(record["accuracy"]) == 7
    # with train_missing=False the same notebook only reports, and says nothing is missing
    values = run("moons", tmp_path, seeds=[0], noise_levels=[0.1], train_missing=False)
    assert values["m_missing"] == "none"


@pytest.mark.skipif(not (data_root() / "FashionMNIST" / "raw").is_dir(), reason="Fashion-MNIST files not in the data root")
def test_fashion_mnist_smoke(tmp_path):
    values = run("fashion_mnist", tmp_path, data_root=str(data_root()), seeds=[0, 1])
    assert "14 of 14 runs" in values["fashion_mnist_linf_status"]        # Table 2 on both seeds
    assert "seeds 0, 1: 2 training seeds per row" in values["fashion_mnist_linf_status"]
    assert "8 of 8 rows" in values["fashion_mnist_l2_status"]            # Table 3 on the first
    assert "±" in values["fashion_mnist_linf_ours"] and "±" not in values["fashion_mnist_l2_ours"]


def test_fashion_mnist_without_data_says_so(tmp_path):
    values = run("fashion_mnist", tmp_path, data_root=str(tmp_path / "empty"))
    assert "Not reproduced here yet" in values["fashion_mnist_linf_status"]
    assert "FashionMNIST" in values["fashion_mnist_linf_status"]


def test_svhn_on_generated_files(tmp_path):
    labels = [1 + i % 10 for i in range(80)]
    write_svhn_mat(tmp_path / "data" / "SVHN" / "train_32x32.mat", labels, 0)
    write_svhn_mat(tmp_path / "data" / "SVHN" / "test_32x32.mat", labels[:40], 1)
    values = run("svhn", tmp_path, data_root=str(tmp_path / "data"), data_params={"check_md5": False, "n_val": 10})
    assert values["svhn_data"] == "present"
    assert "7 of 7 rows" in values["svhn_linf_status"] and "8 of 8 rows" in values["svhn_l2_status"]


def test_svhn_without_data_says_so(tmp_path):
    values = run("svhn", tmp_path, data_root=str(tmp_path / "empty"))
    assert values["svhn_data"].startswith("absent") and "train_32x32.mat" in values["svhn_data"]
    assert "Not reproduced here yet" in values["svhn_linf_status"]


def test_covid_on_generated_files(tmp_path):
    make_covid_tree(tmp_path / "data")
    values = run("covid", tmp_path, data_root=str(tmp_path / "data"), data_params=SMALL_COVID)
    assert values["covid_data"] == "present"
    assert "10 of 10 rows" in values["covid_linf_status"]
    assert "ours" in values["covid_white"]


def test_reproducing(tmp_path):
    from imalib.experiments import available
    from imalib.profiles import table_configs

    # one finished Moons run (the Moons chapter itself needs every row of paper Table 1)
    available(table_configs("moons", "linf", "smoke", methods=["ce"]), results_root=tmp_path / "results", train_missing=True)
    values = run("reproducing", tmp_path)
    assert "moons" in values["r_costs"]


def test_wrong_parameter_type_is_refused(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="seeds"):
        run("moons", tmp_path, seeds="0")
