"""benchmarks/gpu_check.py: says so and exits 0 without CUDA; its CPU-runnable parts run at a tiny budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script().main(["--output", str(tmp_path / "check.json")]) == 0
    assert "no CUDA device here" in capsys.readouterr().out
    assert not (tmp_path / "check.json").exists()


def test_cpu_run_at_a_tiny_budget_writes_a_record(tmp_path: Path) -> None:
    output = tmp_path / "check.json"
    status = load_script().main(["--device", "cpu", "--datasets", "moons", "--methods", "ce,ima,mma",
                                 "--paper-methods", "ce", "--paper-batches", "1", "--output", str(output)])
    record = json.loads(output.read_text())
    assert status == 0 and record["device"] == "cpu"
    assert [(c["dataset"], c["method"], c["ok"]) for c in record["smoke"]] == [
        ("moons", "ce", True), ("moons", "ima", True), ("moons", "mma", True)]
    assert all(len(c["accuracy"]) == 3 and c["margins"] == (c["method"] != "ce") for c in record["smoke"])
    (epoch,) = record["paper_epoch"]
    if "skipped" in epoch:  # no Fashion-MNIST files under the data root on this machine
        assert "FashionMNIST" in epoch["error"]
    else:
        assert epoch["batches"] == 1 and epoch["of_batches"] == 430 and "extrapolated" in epoch["epoch"]
        assert epoch["seconds_per_epoch"] == pytest.approx(430 * epoch["seconds"])
    assert "cudnn_allow_tf32" in record["environment"]


def test_a_failing_cell_is_recorded_and_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_script()

    def broken(*args, **kwargs):
        raise RuntimeError("indices should be either on cpu or on the same device")

    monkeypatch.setattr(module, "smoke_cell", broken)
    output = tmp_path / "check.json"
    assert module.main(["--device", "cpu", "--datasets", "moons", "--methods", "ima", "--paper-methods", "",
                        "--output", str(output)]) == 1
    (cell,) = json.loads(output.read_text())["smoke"]
    assert cell["ok"] is False and "same device" in cell["error"]
