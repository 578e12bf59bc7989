"""Timing helpers shared by the benchmarks: medians of repeats, records written to benchmarks/results/."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from imalib.device import environment

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parents[1] / "results"  # the committed runs (weights of large models not committed)
TRAINED = Path(__file__).resolve().parent / ".trained"  # weights the benchmarks had to train themselves (ignored by git)


def trained_run(config: Any) -> Path:
    """The run directory of ``config`` with its weights: the committed run when its ``model.pt`` is on this
    machine, else a run trained now (once) into ``benchmarks/.trained/``."""
    from imalib.runs import run_dir, train_run

    committed = run_dir(config, RUNS)
    if (committed / "model.pt").exists():
        return committed
    if (run_dir(config, TRAINED) / "train.json").exists():
        return run_dir(config, TRAINED)
    print(f"no trained weights for {config.label} ({config.dataset}, {config.profile}) under {RUNS}: "
          f"training them into {TRAINED} first (kept for later benchmark runs)")
    return train_run(config, results_root=TRAINED, progress=True)


def median_seconds(work: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def interleaved_seconds(works: dict[str, Callable[[], Any]], repeats: int = 3) -> dict[str, list[float]]:
    """Wall times of every work in ``works``, run in turn (A, B, C, A, B, C, ...) ``repeats`` times.

    Interleaving spreads slow drifts of the machine (other load, clock changes) over all works alike,
    so ratios of their medians are not biased towards whichever work ran first or last.
    """
    times: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            began = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - began)
    return times


def code_version() -> dict[str, Any]:
    """The commit the benchmark ran on (and whether the working tree had changes), and the versions of the
    packages the benchmarks compare against."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    versions: dict[str, Any] = {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(status) if status
                                is not None else None}
    for package in ("imalib", "pyautoattack", "advertorch", "submitit"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def record(name: str, summary: str, target: str, data: dict[str, Any]) -> None:
    """Print the summary and write the record (with the command that produced it) to results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    script = Path(sys.argv[0]).resolve()
    payload = {"name": name, "summary": summary, "target": target, "data": data,
               "command": " ".join(["python", f"benchmarks/{script.name}", *sys.argv[1:]]),
               "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"processor": platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__},
               "environment": environment(),  # CPU model and capability, library versions, kernel settings
               "code": code_version()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(summary)
