"""`imalib reproduce`: its three verdicts on smoke records. A record re-runs bit for bit on the CPU (exit 0); re-run
with two threads, training takes other floating-point paths and the verdict is "within the noise" (exit 3); a
tampered record, or accuracies beyond the noise of a training run, are "NOT reproduced" (exit 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from imalib.io import load_torch, save_torch
from imalib.profiles import table_configs
from imalib.reproduce import EXIT_WITHIN_NOISE, compare_masks, main, noise_verdict
from imalib.runs import run_experiment


@pytest.fixture(scope="module")
def smoke_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (config,) = table_configs("moons", "linf", "smoke", methods=["ima"], n_train=256, n_test=64)
    root = tmp_path_factory.mktemp("record")
    return run_experiment(config, results_root=root, device="cpu", progress=False).path


def copy_of(record: Path, tmp_path: Path) -> Path:
    target = tmp_path / "moons" / record.name
    shutil.copytree(record, target)
    return target


def test_a_smoke_record_reproduces_bit_for_bit(smoke_record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(smoke_record), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "compared bit for bit" in out and out.strip().endswith("reproduced bit for bit")
    for name in ("accuracy", "envelope", "robust.pt", "margins.pt", "training log", "model.pt"):
        assert f"ok   {name}:" in out


def test_a_tampered_record_is_caught(smoke_record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(smoke_record, tmp_path)
    robust = load_torch(record / "robust.pt")
    robust[2, 5] = ~robust[2, 5]
    save_torch(record / "robust.pt", robust)
    margins = load_torch(record / "margins.pt")
    margins[0] += 1e-7
    save_torch(record / "margins.pt", margins)
    result = json.loads((record / "result.json").read_text())
    result["accuracy"][1] += 1 / 64
    (record / "result.json").write_text(json.dumps(result))
    assert main([str(record), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "DIFF accuracy: eps 0.05" in out and "DIFF robust.pt: eps 0.1: 1/64 samples differ (e.g. [5])" in out
    assert "DIFF margins.pt: 1/256 values differ" in out and "NOT reproduced: 3 of" in out


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "config.json" in err


def test_masks_within_a_gpu_tolerance() -> None:
    recorded = torch.ones(2, 100, dtype=torch.bool)
    rerun = recorded.clone()
    rerun[1, :2] = False
    assert not compare_masks(recorded, rerun, [0.0, 0.1], 0.0).ok
    assert compare_masks(recorded, rerun, [0.0, 0.1], 0.02).ok
    rerun[1, :3] = False
    assert not compare_masks(recorded, rerun, [0.0, 0.1], 0.02).ok


def test_weights_off_in_their_last_bits_are_a_note_not_a_failure(smoke_record: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(smoke_record, tmp_path)
    weights = load_torch(record / "model.pt")
    name = next(iter(weights))
    weights[name].view(-1)[0] = torch.nextafter(weights[name].view(-1)[0], torch.tensor(1e9))
    save_torch(record / "model.pt", weights)
    assert main([str(record), "--device", "cpu"]) == EXIT_WITHIN_NOISE
    out = capsys.readouterr().out
    assert "note model.pt: 1/" in out and name in out
    assert out.strip().splitlines()[-1].startswith("reproduced within the noise (largest difference 0.0000")


def test_two_threads_change_the_bits_and_the_verdict_is_within_the_noise(
    smoke_record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)   # another reduction order in the matrix products: the weights differ in their last bits
    try:
        code = main([str(smoke_record), "--device", "cpu"])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "note training log" in out or "note model.pt" in out, out
    assert code == EXIT_WITHIN_NOISE and "reproduced within the noise" in out.strip().splitlines()[-1]
    assert "2 sqrt(2) sigma from the binomial SE of 64 test samples" in out


def test_beyond_the_noise_of_a_training_run_is_not_reproduced(smoke_record: Path, tmp_path: Path) -> None:
    record = copy_of(smoke_record, tmp_path)
    old = json.loads((record / "result.json").read_text())
    new = json.loads(json.dumps(old))
    new["accuracy"][3] -= 4 / 64                       # within 2 sqrt(2) SE at 64 samples ...
    assert noise_verdict(record, old, new).ok
    new["accuracy"][3] -= 16 / 64                      # ... and far beyond it
    verdict = noise_verdict(record, old, new)
    assert not verdict.ok and verdict.beyond[0].startswith("accuracy at eps 0.15")
    # with three seeds of the row beside it, their sd sets the tolerance where it exceeds the binomial SE
    for seed, shift in ((1, 0.2), (2, -0.2)):
        sibling = tmp_path / "moons" / f"{record.name}-seed{seed}"
        shutil.copytree(record, sibling)
        other = json.loads(json.dumps(old))
        other["config"]["seed"] = seed
        other["accuracy"] = [a + shift for a in other["accuracy"]]
        (sibling / "result.json").write_text(json.dumps(other))
    verdict = noise_verdict(record, old, new)
    assert verdict.ok and "the seed sd of 3 seeds of the row" in verdict.source


def test_evaluate_only_re_judges_the_record_weights(smoke_record: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(smoke_record, tmp_path)
    assert main([str(record), "--device", "cpu", "--evaluate-only"]) == 0
    assert "evaluation only" in capsys.readouterr().out
    robust = load_torch(record / "robust.pt")
    robust[3, 0] = ~robust[3, 0]
    save_torch(record / "robust.pt", robust)
    assert main([str(record), "--device", "cpu", "--evaluate-only"]) == 1
    assert "DIFF robust.pt: eps 0.15: 1/64 samples differ (e.g. [0])" in capsys.readouterr().out
