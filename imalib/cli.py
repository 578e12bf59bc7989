"""The ``imalib`` command line: train one run, evaluate it, and print the paper-style tables.

Usage (``imalib`` or ``python -m imalib``)::

    imalib train --dataset moons --method ima [--norm linf] [--eps 0.3] [--profile cpu] [--seed 0]
                 [--epochs N] [--batch-size N] [--n-train N] [--n-test N] [--param KEY=VALUE ...]
                 [--output results] [--data-root DIR] [--device cpu] [--quiet]
    imalib evaluate RUN_DIR                      # or the same selection flags as train
    imalib report [--output results] [--dataset D] [--norm N]
    imalib sweep --dataset D --norm N --profile P --seeds 0,1,2 --executor {local,slurm,debug} [--dry-run]
    imalib reproduce RUN_DIR                     # re-run a record from scratch and compare

Every expected failure (a bad value, missing or corrupt data, an unusable
checkpoint, a diverged run, an unwritable output folder) ends with one line
``error: <message>`` on stderr and exit status 2; nothing is left behind in
the output folder except what a resumable run keeps on purpose (its
``config.json`` and last good ``checkpoint.pt``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from imalib.config import DATASETS, PROFILES, ConfigError, RunConfig
from imalib.data.base import DataError
from imalib.io import CheckpointError
from imalib.norms import NORMS
from imalib.params import check_method_params
from imalib.profiles import TABLE_ROWS, table_configs
from imalib.train import TrainingDiverged

# The failures a user can cause (or fix) without touching the code: reported in one line, exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, CheckpointError, TrainingDiverged,
                                                     OSError, ValueError)
METHOD_NAMES: tuple[str, ...] = ("ima", "mma", "trades", "adv", "rand", "ddn", "ce")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
SUBCOMMAND_MODULES = {"sweep": "imalib.sweep", "reproduce": "imalib.reproduce"}


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported: use one of {', '.join(allowed)}")


def parse_value(text: str) -> Any:
    """Read a ``--param`` value: true/false, none/null, an int, a float, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """Turn repeated ``KEY=VALUE`` options into a dict (a later key replaces an earlier one)."""
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param {item!r} is not of the form KEY=VALUE (e.g. beta=0.5)")
        params[key] = parse_value(value)
    return params


def _check_device(device: str) -> str:
    """The device the run uses ("auto": CUDA if available, else the CPU); refuses one this machine lacks."""
    from imalib.device import device_name

    return device_name(device)


def _default_eps(dataset: str, norm: str, method: str) -> float:
    """The training eps of ``method``'s row in the paper's table, if there is exactly one."""
    values = sorted({eps for name, eps in TABLE_ROWS[(dataset, norm)] if name == method})
    if method == "ce":
        return 0.0
    if len(values) == 1:
        return values[0]
    if not values:
        raise ConfigError(f"method {method!r} has no row in the paper's {dataset}/{norm} table, so it has no "
                          f"default eps: give one with --eps")
    raise ConfigError(f"method {method!r} has several rows in the paper's {dataset}/{norm} table (eps "
                      f"{', '.join(f'{v:g}' for v in values)}): choose one with --eps")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build and validate the RunConfig that the selection flags describe.

    The profile's scale and the evaluation eps come from :func:`table_configs`
    for (dataset, norm); ``--eps``, ``--epochs``, ``--batch-size``,
    ``--n-train``, ``--n-test`` and ``--param`` override it. Everything is
    checked here, before any data is read or any file written.
    """
    from imalib.methods import build_method

    _choice("dataset", args.dataset, DATASETS)
    _choice("norm", args.norm, NORMS)
    _choice("profile", args.profile, PROFILES)
    _choice("method", args.method, METHOD_NAMES)
    if args.seed < 0:
        raise ConfigError(f"seed={args.seed} must be a non-negative integer")
    params = check_method_params(args.method, parse_params(args.param))
    rows = table_configs(args.dataset, args.norm, args.profile, seed=args.seed)
    eps = _default_eps(args.dataset, args.norm, args.method) if args.eps is None else args.eps
    if args.method == "ce" and eps != 0:
        raise ConfigError(f"eps={eps!r}: method 'ce' trains without noise, so its eps must be 0 (leave --eps out)")
    same_method = [row for row in rows if row.method == args.method]
    same_row = [row for row in same_method if row.eps == eps]
    # The optimizer belongs to the table row (AdamW only for COVID-19's 'ce'); otherwise the first (Adam) row.
    base = (same_row or same_method or [row for row in rows if row.method != "ce"])[0]
    changes: dict[str, Any] = {"method": args.method, "eps": eps, "method_params": params}
    for name in ("epochs", "batch_size", "n_train", "n_test"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    config = base.replace(**changes)
    build_method(config.method, eps=config.eps, norm=config.norm, params=dict(config.method_params))
    return config


def check_output(root: Path) -> None:
    """Fail early, with a clear message, if results cannot be written under ``root``.

    Walks up to the nearest existing ancestor: it must be a directory that this
    process may write to. Nothing is created.
    """
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write results under {root}: {probe} is a file, not a directory; "
                                 f"choose another --output")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write results under {root}: {probe} is not writable; "
                              f"choose another --output")


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run (resuming from its checkpoint) and print its directory."""
    from imalib.runs import train_run

    config = config_from_args(args)
    args.device = _check_device(args.device)
    root = Path(args.output)
    check_output(root)
    path = train_run(config, results_root=root, data_root=args.data_root, device=args.device,
                     progress=not args.quiet)
    print(path)
    return 0


def _accuracy_frame(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"eps": result["eps"], "accuracy": result["accuracy"], "envelope": result["envelope"],
                         "rises": result["rises"]})


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained run (a directory, or the run the selection flags name) and print its table."""
    from imalib.runs import evaluate_run, run_dir

    if args.run_dir is not None:
        if args.dataset is not None or args.method is not None:
            raise ConfigError("give either a run directory or --dataset/--method, not both")
        path = Path(args.run_dir)
    else:
        if args.dataset is None or args.method is None:
            raise ConfigError("evaluate needs a run directory, or --dataset and --method to select a run")
        config = config_from_args(args)
        path = run_dir(config, args.output)
    args.device = _check_device(args.device)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; train it first with 'imalib train'")
    result = evaluate_run(path, data_root=args.data_root, device=args.device)
    print(f"{result['label']} on {result['dataset']}/{result['norm']} (profile {result['profile']}, "
          f"seed {result['seed']}, n_test {result['n_test']}): {path}")
    print(_accuracy_frame(result).to_string(index=False, formatters={
        "eps": lambda v: f"{v:g}", "accuracy": lambda v: f"{v:.4f}", "envelope": lambda v: f"{v:.4f}"}))
    return 0


def collect_results(root: Path, dataset: str | None = None, norm: str | None = None) -> list[dict[str, Any]]:
    """Every result record under ``root`` (optionally one dataset / norm), sorted by path."""
    if not root.is_dir():
        raise FileNotFoundError(f"results root {root} does not exist or is not a directory")
    results = []
    for file in sorted(root.rglob("result.json")):
        try:
            record = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{file} is not valid JSON ({error}); delete it to evaluate that run again") from None
        if not isinstance(record, dict) or not {"dataset", "norm", "label", "eps", "accuracy"} <= set(record):
            raise ValueError(f"{file} is not an imalib result record; delete it to evaluate that run again")
        if (dataset is None or record["dataset"] == dataset) and (norm is None or record["norm"] == norm):
            results.append(record)
    return results


def _row_order(dataset: str, norm: str, label: str) -> tuple[int, str]:
    labels = [f"{m}{e:g}" if m in ("adv", "rand") else m for m, e in TABLE_ROWS.get((dataset, norm), ())]
    return (labels.index(label) if label in labels else len(labels), label)


def report_tables(results: list[dict[str, Any]]) -> list[tuple[str, pd.DataFrame]]:
    """One (caption, table) per (dataset, norm, profile): methods as rows, eps as columns, accuracy in %.

    A value marked ``*`` is higher than the one at the previous eps (a sign of
    gradient masking). Two records with the same label (other seeds or
    parameters) get their seed and config hash appended to the row name.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in results:
        groups.setdefault((record["dataset"], record["norm"], record.get("profile", "?")), []).append(record)
    tables = []
    for (dataset, norm, profile), records in sorted(groups.items()):
        records = sorted(records, key=lambda r: (_row_order(dataset, norm, r["label"]), r.get("seed", 0)))
        labels = [r["label"] for r in records]
        rows: dict[str, dict[str, str]] = {}
        for record in records:
            name = record["label"]
            if labels.count(name) > 1:
                name = f"{name} (seed {record.get('seed')}, {str(record.get('config_hash', ''))[:6]})"
            rises = record.get("rises") or [False] * len(record["eps"])
            rows[name] = {f"{eps:g}": f"{100 * acc:.1f}" + ("*" if rise else "")
                          for eps, acc, rise in zip(record["eps"], record["accuracy"], rises)}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame = frame[sorted(frame.columns, key=float)].fillna("")
        frame.index.name = "method"
        n_tests = sorted({r.get("n_test") for r in records}, key=str)
        steps = sorted({r.get("config", {}).get("eval_steps") for r in records}, key=str)
        caption = (f"{dataset} / {norm}: robust accuracy (%) by eps; profile {profile}, "
                   f"n_test {'/'.join(map(str, n_tests))}, PGD steps {'/'.join(map(str, steps))}")
        if any("*" in value for row in rows.values() for value in row.values()):
            caption += " (* = higher than at the previous eps: gradient masking?)"
        tables.append((caption, frame))
    return tables


def cmd_report(args: argparse.Namespace) -> int:
    """Print the tables of every evaluated run under the results root."""
    if args.dataset is not None:
        _choice("dataset", args.dataset, DATASETS)
    if args.norm is not None:
        _choice("norm", args.norm, NORMS)
    root = Path(args.output)
    results = collect_results(root, args.dataset, args.norm)
    if not results:
        which = " ".join(f"{k}={v}" for k, v in (("dataset", args.dataset), ("norm", args.norm)) if v)
        raise FileNotFoundError(f"no result.json under {root}{' for ' + which if which else ''}; "
                                f"run 'imalib train' and 'imalib evaluate' first")
    for number, (caption, frame) in enumerate(report_tables(results)):
        if number:
            print()
        print(caption)
        print(frame.to_string())
    return 0


def _add_selection(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The flags that name one run: dataset, method, norm, eps, profile, seed and overrides."""
    parser.add_argument("--dataset", required=required, metavar="{" + ",".join(DATASETS) + "}",
                        help="the dataset (section 3 of the paper)")
    parser.add_argument("--method", required=required, metavar="{" + ",".join(METHOD_NAMES) + "}",
                        help="the training method")
    parser.add_argument("--norm", default="linf", metavar="{" + ",".join(NORMS) + "}",
                        help="the noise norm (default: linf)")
    parser.add_argument("--eps", type=float, default=None,
                        help="training eps (eps_max for ima/mma/trades/ddn); default: the paper's table value "
                             "for that method when there is only one")
    parser.add_argument("--profile", default="cpu", metavar="{" + ",".join(PROFILES) + "}",
                        help="the scale: smoke (seconds), cpu (minutes, reduced) or paper (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                        help="override the profile's batch size")
    parser.add_argument("--n-train", dest="n_train", type=int, default=None,
                        help="override the profile's number of training samples")
    parser.add_argument("--n-test", dest="n_test", type=int, default=None,
                        help="override the profile's number of test samples")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a method parameter, e.g. beta=0.5 or margin_mode=fused (repeatable)")
    parser.add_argument("--output", default="results", metavar="DIR", help="the results root (default: results)")
    parser.add_argument("--data-root", dest="data_root", default=None, metavar="DIR",
                        help="the data root (default: $IMALIB_DATA_ROOT, else data/)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (CUDA if available, else cpu), cpu, cuda or cuda:N (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its three subcommands."""
    parser = argparse.ArgumentParser(
        prog="imalib", description="Increasing-Margin Adversarial (IMA) training: train, evaluate, report.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,report,sweep,reproduce}")

    train = commands.add_parser("train", help="train one run into its run directory (resumes if interrupted)",
                                description="Train one configuration into <output>/<dataset>/<label>-<norm>-<hash>/ "
                                            "and print that directory. An interrupted run resumes from its "
                                            "last epoch's checkpoint.")
    _add_selection(train, required=True)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run and write its result.json",
                                   description="Run the paper's PGD evaluation on a trained run, given as a "
                                               "directory or by the same flags as train; prints the accuracy "
                                               "per eps.")
    evaluate.add_argument("run_dir", nargs="?", default=None, help="a run directory printed by 'imalib train'")
    _add_selection(evaluate, required=False)
    evaluate.set_defaults(func=cmd_evaluate)

    report = commands.add_parser("report", help="print the tables of all evaluated runs",
                                 description="Read every result.json under the results root and print one table "
                                             "per (dataset, norm, profile): methods as rows, eps as columns.")
    report.add_argument("--output", default="results", metavar="DIR", help="the results root (default: results)")
    report.add_argument("--dataset", default=None, metavar="{" + ",".join(DATASETS) + "}", help="only this dataset")
    report.add_argument("--norm", default=None, metavar="{" + ",".join(NORMS) + "}", help="only this norm")
    report.set_defaults(func=cmd_report)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMAND_MODULES:  # subcommands with their own parser (imalib.sweep, imalib.reproduce)
        import importlib

        return int(importlib.import_module(SUBCOMMAND_MODULES[argv[0]]).main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except EXPECTED_ERRORS as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["build_parser", "check_output", "collect_results", "config_from_args", "main", "parse_params",
           "parse_value", "report_tables"]
