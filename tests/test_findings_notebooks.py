"""The book's finding checks fail the build when the records stop supporting a sentence.

The verdict page (``notebooks/verdict.md``) is executed with papermill on a copy of the committed records:
unchanged, it runs; with one Moons IMA record altered so that IMA is no longer first under PGD, the check
beside the sentence "IMA first under PGD" raises FindingNotSupported and the execution fails.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import papermill
import pytest

from imalib.book.execute import ROOT, execute
from imalib.book.findings import FindingNotSupported

os.environ["OMP_NUM_THREADS"] = "1"
RESULTS = ROOT / "results"


def copy_records(tmp_path: Path) -> Path:
    target = tmp_path / "results"
    for dataset in ("moons", "fashion_mnist"):
        shutil.copytree(RESULTS / dataset, target / dataset, ignore=shutil.ignore_patterns("model.pt")
                        if dataset != "moons" else None)
    return target


def ima_records(root: Path, noise: float) -> list[Path]:
    files = []
    for file in sorted((root / "moons").glob("ima-*/result.json")):
        config = json.loads(file.read_text())["config"]
        if config["data_params"].get("noise") == noise and not config["method_params"]:
            files.append(file)
    return files


@pytest.mark.skipif(not (RESULTS / "moons").is_dir() or not (RESULTS / "fashion_mnist").is_dir(),
                    reason="needs the committed Moons and Fashion-MNIST records")
def test_the_verdict_runs_on_the_records_and_fails_on_altered_ones(tmp_path):
    root = copy_records(tmp_path)
    execute("verdict", {"results_root": str(root)}, target=tmp_path / "verdict.ipynb")
    best = json.loads((tmp_path / "verdict.ipynb").read_text())   # executed: the checks passed
    assert best["cells"]
    # the noise level the baselines pin down is not changed by IMA's rows: alter IMA's there
    from imalib.book import verdict
    level = verdict.moons_verdict(str(root), [0, 1, 2], [0.025, 0.05, 0.1, 0.2]).noise
    files = ima_records(root, level)
    assert files, f"no IMA record at noise {level}"
    for file in files:
        record = json.loads(file.read_text())
        record["accuracy"][-1] = record["envelope"][-1] = 0.01     # IMA collapses at eps 0.3 under PGD
        file.write_text(json.dumps(record))
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        execute("verdict", {"results_root": str(root)}, target=tmp_path / "altered.ipynb")
    assert FindingNotSupported.__name__ in str(failure.value)
    assert "IMA first under PGD" in str(failure.value)
