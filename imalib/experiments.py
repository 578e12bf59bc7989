"""Run many configurations, in parallel worker processes when asked."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from imalib.config import RunConfig
from imalib.device import device_name
from imalib.runs import Run, load_run, run_dir, run_experiment


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_one(values: dict[str, Any], results_root: str, data_root: str | None, device: str) -> str:
    config = RunConfig.from_dict(values)
    return str(
        run_experiment(config, results_root=results_root, data_root=data_root, device=device, progress=False).path
    )


def run_many(
    configs: Sequence[RunConfig],
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: str = "auto",
    workers: int = 1,
    train_missing: bool = True,
) -> list[Run]:
    """Finished runs for every config, in order: loaded when complete, else trained and evaluated.

    With ``workers > 1`` (CPU only) the missing runs go to that many spawned
    processes with ``cpu_count // workers`` threads each: small models such as
    the Moons MLP are dominated by per-operation overhead, so two one-thread
    processes beat one two-thread process on a 2-core machine. With
    ``train_missing=False`` a missing run raises FileNotFoundError instead.
    """
    device = device_name(device)
    missing = [c for c in configs if not (run_dir(c, results_root) / "result.json").exists()]
    if missing and not train_missing:
        names = ", ".join(f"{c.label} (seed {c.seed})" for c in missing)
        raise FileNotFoundError(
            f"no finished run for {names} under {results_root}; run the notebook with "
            f"train_missing=True (or `make book`) to produce them"
        )
    if missing:
        if workers > 1 and device == "cpu":
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_worker_init, initargs=(threads,)
            ) as pool:
                futures = [
                    pool.submit(
                        _run_one, c.to_dict(), str(results_root), None if data_root is None else str(data_root), device
                    )
                    for c in missing
                ]
                for future in futures:
                    future.result()
        else:
            for config in missing:
                run_experiment(config, results_root=results_root, data_root=data_root, device=device)
    return [load_run(run_dir(c, results_root), require_weights=False) for c in configs]


def available(
    configs: Sequence[RunConfig],
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: str = "auto",
    workers: int = 1,
    train_missing: bool = True,
) -> tuple[list[Run], list[RunConfig]]:
    """(finished runs, configs without a finished run): trains the missing ones when ``train_missing``."""
    if train_missing:
        return run_many(configs, results_root=results_root, data_root=data_root, device=device, workers=workers), []
    done = [c for c in configs if (run_dir(c, results_root) / "result.json").exists()]
    missing = [c for c in configs if c not in done]
    return [load_run(run_dir(c, results_root), require_weights=False) for c in done], missing
