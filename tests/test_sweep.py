"""Sweeps on submitit: the job list, the sbatch text, a real local sweep, a killed job resuming, bad input."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import submitit
import torch

from imalib.io import load_torch
from imalib.sweep import build_parser, build_plan, main, parse_seeds, run_debug, sbatch_text


def plan_for(*argv: str):
    return build_plan(build_parser().parse_args(list(argv)))


def test_seed_lists() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds(" 7 ") == [7]
    from imalib.config import ConfigError

    for bad in ("", "0,,1", "a", "-1", "1.5", "0,0"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_one_job_per_table_row_and_seed(tmp_path: Path) -> None:
    plan = plan_for("--dataset", "fashion_mnist", "--norm", "l2", "--profile", "paper", "--seeds", "0,1,2",
                    "--executor", "slurm", "--dry-run", "--output", str(tmp_path / "r"))
    labels = [(job.config["method"], job.config["eps"], job.config["seed"]) for job in plan.jobs]
    assert len(labels) == 8 * 3 and len(set(labels)) == 24  # the L2 table has 8 rows
    assert {job.results_root for job in plan.jobs} == {str(tmp_path / "r")}  # one record store
    assert all(job.config["profile"] == "paper" and job.config["epochs"] == 60 for job in plan.jobs)
    assert not (tmp_path / "r").exists()


def test_sbatch_text_has_the_array_a_gpu_a_limit_and_requeue(tmp_path: Path) -> None:
    plan = plan_for("--dataset", "moons", "--profile", "smoke", "--seeds", "0,1", "--executor", "slurm", "--dry-run",
                    "--output", str(tmp_path / "r"), "--partition", "gpu", "--timeout-min", "90", "--mem-gb", "16")
    text = sbatch_text(plan)
    lines = set(text.splitlines())
    assert "#SBATCH --array=0-9%10" in lines  # 5 rows x 2 seeds
    assert "#SBATCH --gpus-per-node=1" in lines and "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --time=90" in lines and "#SBATCH --mem=16GB" in lines
    assert "#SBATCH --signal=USR2@120" in lines and "#SBATCH --requeue" in lines  # signalled, then requeued
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
    # the requeued job is the same job: submitit resubmits a Checkpointable with its arguments
    job = plan.jobs[0]
    again = job.checkpoint()
    assert again.function is job and isinstance(job, submitit.helpers.Checkpointable)


def test_dry_run_prints_jobs_and_sbatch_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["--dataset", "moons", "--profile", "smoke", "--seeds", "0,1", "--executor", "slurm", "--dry-run",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "10 jobs" in printed and "#SBATCH --array=0-9%10" in printed and "ima seed 1" in printed
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "mnist", "--executor", "local"], "--dataset 'mnist'"),
    (["--dataset", "moons", "--norm", "l3", "--executor", "local"], "--norm 'l3'"),
    (["--dataset", "moons", "--norm", "l2", "--executor", "local"], "no table"),
    (["--dataset", "moons", "--profile", "huge", "--executor", "local"], "--profile 'huge'"),
    (["--dataset", "moons", "--seeds", "0;1", "--executor", "local"], "--seeds"),
    (["--dataset", "moons", "--executor", "cloud"], "--executor 'cloud'"),
    (["--dataset", "moons", "--executor", "local", "--methods", "ima,bogus"], "--methods bogus"),
    (["--dataset", "moons", "--executor", "slurm"], "srun"),
    (["--dataset", "moons", "--executor", "local", "--device", "cuda"], "CUDA is not available"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(argv: list[str], words: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no srun, no sbatch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r"
    assert main(argv + ["--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err
    assert not out.exists()


def record(path: Path) -> tuple[list[float], torch.Tensor]:
    return json.loads((path / "result.json").read_text())["accuracy"], load_torch(path / "robust.pt")


def test_local_sweep_lands_records_in_one_root(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--dataset", "moons", "--profile", "smoke", "--seeds", "0,1", "--methods", "ce,ima", "--n-train", "256",
            "--n-test", "64", "--executor", "local", "--parallel", "2", "--threads", "1", "--output", str(out),
            "--device", "cpu"]
    assert main(argv) == 0
    landed = sorted(p.parent.name for p in out.rglob("result.json"))
    assert len(landed) == 4 and sum(name.startswith("ima-") for name in landed) == 2
    # the same jobs in this process (debug executor) give the same records, bit for bit
    debug_out = tmp_path / "debug"
    assert main([a if a != "local" else "debug" for a in argv[:-4]] + ["--output", str(debug_out), "--device",
                                                                        "cpu"]) == 0
    for path in out.glob("moons/*"):
        a, b = record(path), record(debug_out / "moons" / path.name)
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    before = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert main([a if a != "local" else "debug" for a in argv]) == 0  # a second sweep finds every run complete
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == before  # and rewrites nothing


def test_a_job_killed_mid_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--dataset", "moons", "--profile", "smoke", "--methods", "ce", "--epochs", "150", "--n-train", "512",
            "--n-test", "64", "--executor", "local", "--threads", "1", "--device", "cpu", "--output", str(out)]
    plan = plan_for(*argv)
    (job,) = plan.jobs
    run = Path(job.describe().split(" -> ")[1])
    executor = submitit.LocalExecutor(folder=tmp_path / "logs" / "%j")
    executor.update_parameters(timeout_min=10)
    # submitit's cancel sends SIGINT. A shell's background job (`make test &`, nohup) starts with SIGINT ignored;
    # the job would inherit that and run to the end. A handler here resets to the default across exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handle = executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 240
    while not (run / "checkpoint.pt").exists():
        assert time.monotonic() < deadline and not handle.done(), "the job never wrote a checkpoint"
        time.sleep(0.05)
    handle.cancel()
    while not handle.done():
        time.sleep(0.1)
    assert not (run / "result.json").exists(), "the job finished before it was killed: make it longer"
    interrupted = load_torch(run / "checkpoint.pt")
    assert 1 <= interrupted["epoch"] < 150
    assert main(argv) == 0  # the sweep again: the job resumes
    history = json.loads((run / "result.json").read_text())["history"]
    assert len(history) == 150
    assert history[:interrupted["epoch"]] == interrupted["history"]  # the epochs before the kill were not redone
    fresh = tmp_path / "fresh"
    run_debug(plan_for(*argv[:-2], "--output", str(fresh)))
    a, b = record(run), record(fresh / "moons" / run.name)
    assert a[0] == b[0] and torch.equal(a[1], b[1])  # and it ends where an uninterrupted run ends, bit for bit
    weights, reference = load_torch(run / "model.pt"), load_torch(fresh / "moons" / run.name / "model.pt")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
