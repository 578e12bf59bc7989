"""Sweeps: one job per row of the paper's table and seed, run here or on a SLURM cluster with submitit.

Usage (``python -m imalib sweep``)::

    imalib sweep --dataset D --norm N --profile P --seeds 0,1,2 --executor {local,slurm,debug} [--dry-run]
                 [--methods ima,adv0.3] [--epochs N] [--output results] [--data-root DIR] [--device auto]
                 [--parallel K] [--threads T] [--timeout-min M] [--partition NAME] [--gpus G] ...

Every job calls :func:`imalib.runs.run_experiment` on one configuration and
writes into the same results root, so ``imalib report`` and the notebooks
render whatever has landed. A job that finds its run complete does nothing; a
job that finds a ``checkpoint.pt`` resumes from it.

* ``debug`` runs the jobs one after another in this process;
* ``local`` starts them as submitit processes on this machine, at most
  ``--parallel`` at a time (submitit's LocalExecutor would start them all at
  once), each with an explicit timeout (its default kills a job after 2 min);
* ``slurm`` submits one sbatch array with a GPU per job, a time limit, and
  requeue on timeout: submitit signals the job before the limit, the job
  checkpoints by resubmitting itself, and the requeued job resumes from the
  run's ``checkpoint.pt`` (its last finished epoch).

``--dry-run`` prints the jobs (and, for slurm, the sbatch text) and writes
nothing. Bad input ends with one line ``error: ...`` and exit status 2, before
anything is written or submitted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from imalib.config import DATASETS, PROFILES, RunConfig
from imalib.errors import ConfigError
from imalib.norms import NORMS

EXECUTORS = ("local", "slurm", "debug")
EXIT_ERROR = 2
# Per profile, the time limit of one job (minutes). On SLURM a job that reaches it is requeued and resumes.
DEFAULT_TIMEOUT_MIN = {"smoke": 30, "cpu": 720, "paper": 240}
SIGNAL_DELAY_S = 120  # how long before the limit submitit signals the job to checkpoint and requeue
MAX_REQUEUES = 20


class SweepJob(submitit.helpers.Checkpointable):
    """One table row at one seed: train (resuming) and evaluate into the shared results root.

    Being Checkpointable, it is resubmitted with the same arguments when SLURM
    signals a timeout; the resubmitted job resumes from ``checkpoint.pt``.
    """

    def __init__(
        self, config: dict[str, Any], results_root: str, data_root: str | None, device: str, threads: int | None
    ) -> None:
        self.config = config
        self.results_root = results_root
        self.data_root = data_root
        self.device = device
        self.threads = threads

    def __call__(self) -> str:
        import torch

        from imalib.runs import run_experiment

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        run = run_experiment(
            RunConfig.from_dict(self.config),
            results_root=self.results_root,
            data_root=self.data_root,
            device=self.device,
            progress=False,
        )
        return str(run.path)

    def describe(self) -> str:
        config = RunConfig.from_dict(self.config)
        from imalib.runs import run_dir

        return f"{config.label} seed {config.seed} -> {run_dir(config, self.results_root)}"


@dataclass(frozen=True)
class Plan:
    """What a sweep will do, fully checked before anything runs."""

    jobs: tuple[SweepJob, ...]
    executor: str
    log_dir: Path
    parallel: int
    timeout_min: float
    slurm: dict[str, Any]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; non-negative integers, no repeats."""
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(not part.isdigit() for part in parts):
        raise ConfigError(f"--seeds {text!r} is not a comma-separated list of non-negative integers (e.g. 0,1,2)")
    seeds = [int(part) for part in parts]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} repeats a seed: give each seed once (e.g. 0,1,2)")
    return seeds


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name} {value!r} is not supported: use one of {', '.join(allowed)}")


def submit_command(log_dir: Path) -> str:
    """The command each array task runs (as submitit's executors write it)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(log_dir / "%j"))])


def slurm_parameters(args: argparse.Namespace, timeout_min: float) -> dict[str, Any]:
    """sbatch parameters in submitit's native names: GPU, time limit, requeue on timeout."""
    params: dict[str, Any] = {
        "job_name": f"imalib-{args.dataset}-{args.norm}-{args.profile}",
        "time": int(timeout_min),
        "gpus_per_node": args.gpus,
        "cpus_per_task": args.cpus_per_task,
        "signal_delay_s": SIGNAL_DELAY_S,
        "array_parallelism": args.array_parallelism,
        "additional_parameters": {"requeue": True},
    }
    if args.partition:
        params["partition"] = args.partition
    if args.mem_gb is not None:
        from submitit.slurm.slurm import _convert_mem

        params["mem"] = _convert_mem(args.mem_gb)
    return params


def sbatch_text(plan: Plan) -> str:
    """The sbatch file that ``--executor slurm`` submits for ``plan`` (one array task per job)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(
        command=submit_command(plan.log_dir), folder=plan.log_dir / "%j", map_count=len(plan.jobs), **plan.slurm
    )


def build_plan(args: argparse.Namespace) -> Plan:
    """Check every input and build the jobs; raises ConfigError (one line, naming the fix) on bad input."""
    from imalib.device import device_name
    from imalib.profiles import table_configs

    _choice("dataset", args.dataset, DATASETS)
    _choice("norm", args.norm, NORMS)
    _choice("profile", args.profile, PROFILES)
    _choice("executor", args.executor, EXECUTORS)
    seeds = parse_seeds(args.seeds)
    for name in ("parallel", "gpus", "cpus_per_task", "array_parallelism"):
        if getattr(args, name) < (0 if name == "gpus" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} must be a positive integer")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be a positive integer")
    timeout_min = DEFAULT_TIMEOUT_MIN[args.profile] if args.timeout_min is None else args.timeout_min
    if not timeout_min > 0:
        raise ConfigError(f"--timeout-min {timeout_min} must be positive")
    if args.executor == "slurm":
        device = args.device  # resolved on the compute node, which has the GPU this login node may lack
        if not args.dry_run and (shutil.which("srun") is None or shutil.which("sbatch") is None):
            raise ConfigError(
                "--executor slurm needs srun and sbatch on PATH (run it on the cluster's login node), "
                "or add --dry-run to print the jobs and the sbatch text"
            )
    else:
        device = device_name(args.device)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    overrides: dict[str, Any] = {}
    for name in ("epochs", "n_train", "n_test"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value} must be a positive integer")
            overrides[name] = value
    threads = args.threads
    if threads is None and args.executor == "local":
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
    if methods is not None:
        rows = table_configs(args.dataset, args.norm, args.profile)
        names = {c.label for c in rows} | {c.method for c in rows}
        unknown = [m for m in methods if m not in names]
        if unknown:
            raise ConfigError(
                f"--methods {','.join(unknown)} is not a row of the {args.dataset}/{args.norm} table: "
                f"use some of {', '.join(c.label for c in rows)}"
            )
    jobs = []
    for seed in seeds:
        for config in table_configs(args.dataset, args.norm, args.profile, seed=seed, methods=methods, **overrides):
            jobs.append(SweepJob(config.to_dict(), str(args.output), args.data_root, device, threads))
    log_dir = (
        Path(args.log_dir)
        if args.log_dir
        else Path(args.output) / ".sweeps" / f"{args.dataset}-{args.norm}-{args.profile}"
    )
    plan = Plan(
        jobs=tuple(jobs),
        executor=args.executor,
        log_dir=log_dir,
        parallel=args.parallel,
        timeout_min=float(timeout_min),
        slurm={},
    )
    if args.executor == "slurm":
        plan = Plan(
            jobs=plan.jobs,
            executor="slurm",
            log_dir=log_dir,
            parallel=args.parallel,
            timeout_min=float(timeout_min),
            slurm=slurm_parameters(args, timeout_min),
        )
    if not args.dry_run:
        from imalib.cli import check_output

        check_output(Path(args.output))
        check_output(log_dir)
    return plan


def run_local(plan: Plan, poll_s: float = 0.5) -> list[tuple[SweepJob, BaseException | None]]:
    """Run the jobs as local submitit processes, at most ``plan.parallel`` at a time."""
    executor = submitit.LocalExecutor(folder=plan.log_dir / "%j")
    on_gpu = any(job.device.startswith("cuda") for job in plan.jobs)
    executor.update_parameters(timeout_min=plan.timeout_min, gpus_per_node=1 if on_gpu else 0)
    pending = list(plan.jobs)
    running: list[tuple[SweepJob, Any]] = []
    finished: list[tuple[SweepJob, Any]] = []
    try:
        while pending or running:
            while pending and len(running) < plan.parallel:
                job = pending.pop(0)
                running.append((job, executor.submit(job)))
            time.sleep(poll_s)
            still: list[tuple[SweepJob, Any]] = []
            for job, handle in running:
                (finished if handle.done() else still).append((job, handle))
            running = still
    except KeyboardInterrupt:
        for _, handle in running:
            handle.cancel()
        raise
    outcomes: list[tuple[SweepJob, BaseException | None]] = []
    for job, handle in finished:
        try:
            handle.result()
            outcomes.append((job, None))
        except Exception as error:  # noqa: BLE001 - a failed job is reported; the others still count
            outcomes.append((job, error))
    return outcomes


def run_debug(plan: Plan) -> list[tuple[SweepJob, BaseException | None]]:
    """Run the jobs one after another in this process (submitit's DebugExecutor)."""
    executor = submitit.DebugExecutor(folder=plan.log_dir / "%j")
    outcomes: list[tuple[SweepJob, BaseException | None]] = []
    for job in plan.jobs:
        try:
            executor.submit(job).result()
            outcomes.append((job, None))
        except Exception as error:  # noqa: BLE001 - as in run_local
            outcomes.append((job, error))
    return outcomes


def submit_slurm(plan: Plan) -> list[str]:
    """Submit the jobs as one sbatch array; returns the SLURM job ids."""
    executor = submitit.SlurmExecutor(folder=plan.log_dir / "%j", max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**plan.slurm)
    with executor.batch():
        handles = [executor.submit(job) for job in plan.jobs]
    return [handle.job_id for handle in handles]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imalib sweep",
        description="One job per row of the paper's table and "
        "seed, run locally or on SLURM with submitit; all into one results root.",
    )
    parser.add_argument("--dataset", required=True, metavar="{" + ",".join(DATASETS) + "}")
    parser.add_argument("--norm", default="linf", metavar="{" + ",".join(NORMS) + "}")
    parser.add_argument("--profile", default="cpu", metavar="{" + ",".join(PROFILES) + "}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--executor", required=True, metavar="{" + ",".join(EXECUTORS) + "}")
    parser.add_argument(
        "--dry-run", dest="dry_run", action="store_true", help="print the jobs (and the sbatch text) and write nothing"
    )
    parser.add_argument("--methods", default=None, help="only these rows, e.g. ima,adv0.3 (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--n-train", dest="n_train", type=int, default=None)
    parser.add_argument("--n-test", dest="n_test", type=int, default=None)
    parser.add_argument("--output", default="results", metavar="DIR", help="the shared results root")
    parser.add_argument("--data-root", dest="data_root", default=None, metavar="DIR")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else cpu), cpu or cuda")
    parser.add_argument(
        "--log-dir",
        dest="log_dir",
        default=None,
        help="submitit's logs and pickles (default: <output>/.sweeps/<dataset>-<norm>-<profile>)",
    )
    parser.add_argument("--parallel", type=int, default=1, help="local: jobs at a time (default: 1)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per job (default, local: cores / --parallel)"
    )
    parser.add_argument(
        "--timeout-min",
        dest="timeout_min",
        type=float,
        default=None,
        help="time limit per job in minutes (default by profile: smoke 30, cpu 720, paper 240)",
    )
    parser.add_argument("--partition", default=None, help="slurm: the partition")
    parser.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job (default: 1)")
    parser.add_argument("--cpus-per-task", dest="cpus_per_task", type=int, default=4, help="slurm (default: 4)")
    parser.add_argument("--mem-gb", dest="mem_gb", type=float, default=None, help="slurm: memory per job")
    parser.add_argument(
        "--array-parallelism",
        dest="array_parallelism",
        type=int,
        default=64,
        help="slurm: array tasks running at once (default: 64)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sweep`` subcommand; returns the exit status (0 all jobs done, 1 some failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        plan = build_plan(args)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"{len(plan.jobs)} jobs ({args.dataset}/{args.norm}, profile {args.profile}, seeds {args.seeds}) on "
        f"executor {plan.executor}, results in {args.output}:"
    )
    for number, job in enumerate(plan.jobs):
        print(f"  [{number}] {job.describe()}")
    if args.dry_run:
        if plan.executor == "slurm":
            print("\nsbatch file:\n" + sbatch_text(plan))
        else:
            print(
                f"\n{plan.executor}: at most {plan.parallel} at a time, {plan.timeout_min:g} min per job, "
                f"device {plan.jobs[0].device if plan.jobs else args.device}"
            )
        return 0
    if plan.executor == "slurm":
        ids = submit_slurm(plan)
        print(f"submitted array {ids[0].split('_')[0] if ids else '-'} ({len(ids)} tasks); logs in {plan.log_dir}")
        return 0
    outcomes = run_local(plan) if plan.executor == "local" else run_debug(plan)
    failed = [(job, error) for job, error in outcomes if error is not None]
    for job, failure in failed:
        last = [line for line in str(failure).splitlines() if line.strip()][-1:] or [type(failure).__name__]
        print(f"failed: {job.describe()}: {last[0].strip()}", file=sys.stderr)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} jobs finished; logs in {plan.log_dir}")
    return 1 if failed else 0


__all__ = [
    "EXECUTORS",
    "Plan",
    "SweepJob",
    "build_plan",
    "main",
    "parse_seeds",
    "run_debug",
    "run_local",
    "sbatch_text",
    "submit_slurm",
]
