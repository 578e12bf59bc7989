"""The ``imalib`` command line: train one run, evaluate it, and print the paper-style tables.

Usage (``imalib`` or ``python -m imalib``)::

    imalib train --dataset moons --method ima [--norm linf] [--eps 0.3] [--profile cpu] [--seed 0]
                 [--epochs N] [--batch-size N] [--n-train N] [--n-test N] [--param KEY=VALUE ...]
                 [--output results] [--data-root DIR] [--device cpu] [--quiet]
    imalib evaluate RUN_DIR                      # or the same selection flags as train
    imalib evaluate --attack autoattack [--aa-full | --aa-version standard --n-images 100 --aa-eps 0.1 0.2] RUN_DIR
    imalib reevaluate RUN_DIR --restore-weights SCRATCH | --large-test 2000 [--with-autoattack] | --white-noise
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
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imalib.config import DATASETS, NORMS, PROFILES, RunConfig
from imalib.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from imalib.methods import METHODS

# Nothing heavier than the configuration is imported here: ``imalib --help`` needs no torch. Each command
# imports what it runs.

# The failures a user can cause (or fix) without touching the code: reported in one line, exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    TrainingDiverged,
    OSError,
    ValueError,
)
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


def _default_eps(rows: Sequence[RunConfig], dataset: str, norm: str, method: str) -> float:
    """The training eps of ``method``'s row in the paper's table (``rows``), if there is exactly one."""
    from imalib.methods import takes_eps

    if not takes_eps(method):
        return 0.0
    values = sorted({row.eps for row in rows if row.method == method})
    if len(values) == 1:
        return values[0]
    if not values:
        raise ConfigError(
            f"method {method!r} has no row in the paper's {dataset}/{norm} table, so it has no "
            f"default eps: give one with --eps"
        )
    raise ConfigError(
        f"method {method!r} has several rows in the paper's {dataset}/{norm} table (eps "
        f"{', '.join(f'{v:g}' for v in values)}): choose one with --eps"
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build and validate the RunConfig that the selection flags describe: the one validation path.

    parse -> :func:`table_configs` (dataset, norm, profile, seed) -> ``replace``
    (eps, scale overrides, method parameters) -> :func:`build_method` (method
    name, eps, norm and parameters). Everything is checked here, before any
    data is read or any file written.
    """
    from imalib.methods import build_method, method_class
    from imalib.profiles import table_configs

    _choice("dataset", args.dataset, DATASETS)
    _choice("norm", args.norm, NORMS)
    _choice("profile", args.profile, PROFILES)
    method_class(args.method)
    rows = table_configs(args.dataset, args.norm, args.profile, seed=args.seed)
    eps = _default_eps(rows, args.dataset, args.norm, args.method) if args.eps is None else args.eps
    same_method = [row for row in rows if row.method == args.method]
    same_row = [row for row in same_method if row.eps == eps]
    # The optimizer belongs to the table row (AdamW only for COVID-19's 'ce'); otherwise the first (Adam) row.
    base = (same_row or same_method or [row for row in rows if row.optimizer == "adam"])[0]
    changes: dict[str, Any] = {"method": args.method, "eps": eps, "method_params": parse_params(args.param)}
    for name in ("epochs", "batch_size", "n_train", "n_test"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    config = base.replace(**changes)
    method = build_method(config.method, eps=config.eps, norm=config.norm, params=dict(config.method_params))
    # the parameters as the method holds them (an int given for a float parameter becomes a float)
    return config.replace(method_params={name: getattr(method, name) for name, _ in config.method_params})


def check_output(root: Path) -> None:
    """Fail early, with a clear message, if results cannot be written under ``root``.

    Walks up to the nearest existing ancestor: it must be a directory that this
    process may write to. Nothing is created.
    """
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(
            f"cannot write results under {root}: {probe} is a file, not a directory; choose another --output"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write results under {root}: {probe} is not writable; choose another --output")


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run (resuming from its checkpoint) and print its directory."""
    from imalib.runs import train_run

    config = config_from_args(args)
    args.device = _check_device(args.device)
    root = Path(args.output)
    check_output(root)
    path = train_run(config, results_root=root, data_root=args.data_root, device=args.device, progress=not args.quiet)
    print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained run (a directory, or the run the selection flags name) and print its table."""
    from imalib.runs import evaluate_run, load_robustness, run_dir

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
    if args.attack != "autoattack" and (
        args.aa_version != "custom" or args.n_images is not None or args.aa_eps is not None or args.aa_full
    ):
        raise ConfigError("--aa-version, --n-images, --aa-eps and --aa-full go with --attack autoattack")
    if args.aa_full and args.aa_version != "custom":
        raise ConfigError("--aa-full goes with --aa-version custom (the standard set always attacks every image)")
    if args.aa_eps is not None and args.aa_version != "standard":
        raise ConfigError("--aa-eps goes with --aa-version standard (the custom set runs at every level)")
    if args.attack == "autoattack":
        return _evaluate_autoattack(path, args)
    record = evaluate_run(
        path,
        data_root=args.data_root,
        device=args.device,
        autoattack=None if args.attack == "default" else False,
        progress=not args.quiet,
    )
    print(
        f"{record.label} on {record.dataset}/{record.norm} (profile {record.profile}, "
        f"seed {record.seed}, n_test {record.n_test}): {path}"
    )
    print(
        load_robustness(path)
        .to_frame()
        .to_string(
            index=False,
            formatters={"eps": lambda v: f"{v:g}", "accuracy": lambda v: f"{v:.4f}", "envelope": lambda v: f"{v:.4f}"},
        )
    )
    return 0


def cmd_reevaluate(args: argparse.Namespace) -> int:
    """Evaluations added to a finished run: its weights restored, a larger test subset, the white-noise test."""
    from imalib import reevaluate

    path = Path(args.run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; train it first with 'imalib train'")
    chosen = [args.restore_weights is not None, args.large_test is not None, args.white_noise]
    if sum(chosen) != 1:
        raise ConfigError("reevaluate needs exactly one of --restore-weights SCRATCH, --large-test N, --white-noise")
    if args.with_autoattack and args.large_test is None:
        raise ConfigError("--with-autoattack goes with --large-test N")
    device = _check_device(args.device)
    if args.restore_weights is not None:
        note = reevaluate.restore_weights(path, scratch_root=args.restore_weights, data_root=args.data_root,
                                          device=device)  # fmt: skip
        print(f"{path}: weights restored ({note['check']})")
    elif args.large_test is not None:
        record = reevaluate.add_large_test(
            path, n_images=args.large_test, autoattack=args.with_autoattack, data_root=args.data_root, device=device,
            progress=not args.quiet,
        )  # fmt: skip
        entry = record.large_test
        assert entry is not None
        print(f"{path}: the paper's PGD on {entry.n_images} test images")
        for k, eps in enumerate(entry.eps):
            worst = "" if entry.worst_of_both is None else f"  worst of both {entry.worst_of_both[k]:.4f}"
            print(f"  eps {eps:g}: {entry.accuracy[k]:.4f}{worst}")
    else:
        record = reevaluate.add_white_noise(path, data_root=args.data_root, device=device)
        noise = record.white_noise
        assert noise is not None
        print(f"{path}: white noise, {noise.repeats} draws per image, {noise.n_images} images "
              f"(clean error {noise.clean_error:.4f})")  # fmt: skip
        for level, error, flip in zip(noise.levels, noise.error_rate, noise.flip_rate, strict=True):
            print(f"  level {level:g}: error rate {error:.4f}, flip rate {flip:.4f}")
    return 0


def _evaluate_autoattack(path: Path, args: argparse.Namespace) -> int:
    """Add or refresh AutoAttack in a run's record (PGD first if the run was never evaluated); print both."""
    import pandas as pd

    from imalib.records import RESULT_FILE
    from imalib.runs import add_autoattack, evaluate_run

    if args.n_images is not None and args.n_images < 1:
        raise ConfigError(f"--n-images {args.n_images} must be at least 1")
    if not (path / RESULT_FILE).exists() and args.aa_version == "custom" and args.n_images is None:
        record = evaluate_run(
            path, data_root=args.data_root, device=args.device, autoattack=True, progress=not args.quiet,
            full_autoattack=args.aa_full,
        )  # fmt: skip
    else:
        if not (path / RESULT_FILE).exists():
            evaluate_run(path, data_root=args.data_root, device=args.device, autoattack=False, progress=not args.quiet)
        record = add_autoattack(
            path,
            version=args.aa_version,
            n_images=args.n_images,
            eps=args.aa_eps,
            data_root=args.data_root,
            device=args.device,
            progress=not args.quiet,
            full=args.aa_full,
        )
    entry = record.autoattack if args.aa_version == "custom" else record.autoattack_standard
    assert entry is not None
    print(
        f"{record.label} on {record.dataset}/{record.norm} (profile {record.profile}, seed {record.seed}): "
        f"AutoAttack {args.aa_version} ({'+'.join(entry.settings['attacks'])}) on {entry.n_images} test "
        f"images, {entry.seconds:.0f} s: {path}"
        + ("" if entry.mode == "full" else " (cascade: AutoAttack on the images PGD left robust)")
    )
    frame = pd.DataFrame(
        {
            "eps": entry.eps,
            "pgd": entry.pgd_accuracy,
            "autoattack": entry.accuracy if entry.accuracy is not None else [float("nan")] * len(entry.eps),
            "worst_of_both": entry.worst_of_both,
            "seconds": entry.level_seconds,
        }
    )
    print(
        frame.to_string(
            index=False,
            formatters={
                "eps": lambda v: f"{v:g}",
                "seconds": lambda v: f"{v:.0f}",
                **{c: (lambda v: f"{v:.4f}") for c in ("pgd", "autoattack", "worst_of_both")},
            },
        )
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the tables of every evaluated run under the results root."""
    from imalib.records import collect
    from imalib.tables import report_tables

    if args.dataset is not None:
        _choice("dataset", args.dataset, DATASETS)
    if args.norm is not None:
        _choice("norm", args.norm, NORMS)
    root = Path(args.output)
    records = collect(root, dataset=args.dataset, norm=args.norm)
    if not records:
        which = " ".join(f"{k}={v}" for k, v in (("dataset", args.dataset), ("norm", args.norm)) if v)
        raise FileNotFoundError(
            f"no result.json under {root}{' for ' + which if which else ''}; "
            f"run 'imalib train' and 'imalib evaluate' first"
        )
    for number, (caption, frame) in enumerate(report_tables(records)):
        if number:
            print()
        print(caption)
        print(frame.to_string())
    return 0


def _add_selection(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The flags that name one run: dataset, method, norm, eps, profile, seed and overrides."""
    parser.add_argument(
        "--dataset",
        required=required,
        metavar="{" + ",".join(DATASETS) + "}",
        help="the dataset (section 3 of the paper)",
    )
    parser.add_argument(
        "--method", required=required, metavar="{" + ",".join(METHODS) + "}", help="the training method"
    )
    parser.add_argument(
        "--norm", default="linf", metavar="{" + ",".join(NORMS) + "}", help="the noise norm (default: linf)"
    )
    parser.add_argument(
        "--eps",
        type=float,
        default=None,
        help="training eps (eps_max for ima/mma/trades/ddn); default: the paper's table value "
        "for that method when there is only one",
    )
    parser.add_argument(
        "--profile",
        default="cpu",
        metavar="{" + ",".join(PROFILES) + "}",
        help="the scale: smoke (seconds), cpu (minutes, reduced) or paper (default: cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    parser.add_argument(
        "--batch-size", dest="batch_size", type=int, default=None, help="override the profile's batch size"
    )
    parser.add_argument(
        "--n-train", dest="n_train", type=int, default=None, help="override the profile's number of training samples"
    )
    parser.add_argument(
        "--n-test", dest="n_test", type=int, default=None, help="override the profile's number of test samples"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method parameter, e.g. beta=0.5 or margin_mode=fused (repeatable)",
    )
    parser.add_argument("--output", default="results", metavar="DIR", help="the results root (default: results)")
    parser.add_argument(
        "--data-root",
        dest="data_root",
        default=None,
        metavar="DIR",
        help="the data root (default: $IMALIB_DATA_ROOT, else data/)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA if available, else cpu), cpu, cuda or cuda:N (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its three subcommands."""
    parser = argparse.ArgumentParser(
        prog="imalib", description="Increasing-Margin Adversarial (IMA) training: train, evaluate, report."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,reevaluate,report,sweep,reproduce}"
    )

    train = commands.add_parser(
        "train",
        help="train one run into its run directory (resumes if interrupted)",
        description="Train one configuration into <output>/<dataset>/<label>-<norm>-<hash>/ "
        "and print that directory. An interrupted run resumes from its "
        "last epoch's checkpoint.",
    )
    _add_selection(train, required=True)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained run and write its result.json",
        description="Run the paper's PGD evaluation on a trained run, given as a "
        "directory or by the same flags as train; prints the accuracy "
        "per eps.",
    )
    evaluate.add_argument("run_dir", nargs="?", default=None, help="a run directory printed by 'imalib train'")
    _add_selection(evaluate, required=False)
    evaluate.add_argument(
        "--attack",
        choices=("default", "pgd", "autoattack"),
        default="default",
        help="default: the paper's PGD, then AutoAttack where the profile says so (image "
        "datasets at cpu and paper); pgd: PGD only; autoattack: add or refresh AutoAttack "
        "in the run's record, keeping its PGD numbers (needs the weights)",
    )
    evaluate.add_argument(
        "--aa-version",
        dest="aa_version",
        choices=("custom", "standard"),
        default="custom",
        help="custom: APGD-CE + APGD-T (FAB for two classes), one restart; standard: the "
        "package's full set, stored as a separate entry (default: custom)",
    )
    evaluate.add_argument(
        "--n-images",
        dest="n_images",
        type=int,
        default=None,
        help="with --aa-version standard: attack only this many test images (drawn with the run's seed)",
    )
    evaluate.add_argument(
        "--aa-eps",
        dest="aa_eps",
        type=float,
        nargs="+",
        default=None,
        metavar="EPS",
        help="with --aa-version standard: only these of the run's noise levels (default: all)",
    )
    evaluate.add_argument(
        "--aa-full",
        dest="aa_full",
        action="store_true",
        help="with --attack autoattack: attack every correctly classified image, not only those PGD left robust "
        "(slower; adds the AutoAttack-alone column, the worst of both is the same)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_evaluate)

    again = commands.add_parser(
        "reevaluate",
        help="add to an evaluated run: its weights restored, a larger test subset, or the white-noise test",
        description="Evaluations added to a finished run, each written as its own entry of result.json; the "
        "run's own numbers stay as they are.",
    )
    again.add_argument("run_dir", help="an evaluated run directory")
    again.add_argument("--restore-weights", dest="restore_weights", metavar="SCRATCH", default=None,
                       help="train the run again under SCRATCH and keep its weights if PGD reproduces robust.pt "
                       "bit for bit")  # fmt: skip
    again.add_argument(
        "--large-test",
        dest="large_test",
        type=int,
        metavar="N",
        default=None,
        help="the paper's PGD on the first N test images (a superset of the run's own)",
    )
    again.add_argument(
        "--with-autoattack",
        dest="with_autoattack",
        action="store_true",
        help="with --large-test: also AutoAttack on the images PGD left robust (worst of both)",
    )
    again.add_argument(
        "--white-noise",
        dest="white_noise",
        action="store_true",
        help="the paper's white-noise test (Appendix B) at levels 0.05, 0.1, 0.2, 0.3",
    )
    again.add_argument("--data-root", dest="data_root", default=None, help="data folder (default: $IMALIB_DATA_ROOT "
                       "or data/)")  # fmt: skip
    again.add_argument("--device", default="auto", help="auto, cpu or cuda")
    again.add_argument("--quiet", action="store_true", help="no progress bars")
    again.set_defaults(func=cmd_reevaluate)

    report = commands.add_parser(
        "report",
        help="print the tables of all evaluated runs",
        description="Read every result.json under the results root and print one table "
        "per (dataset, norm, profile): methods as rows, eps as columns.",
    )
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


__all__ = ["build_parser", "check_output", "config_from_args", "main", "parse_params", "parse_value"]
