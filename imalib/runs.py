"""Run directories: train, evaluate and record one configuration, or load it back.

A run lives in ``<results>/<dataset>/<label>-<norm>-<hash>/`` and holds
``config.json``; while training ``checkpoint.pt``; after training ``model.pt``
(final weights), ``margins.pt`` (IMA / MMA) and ``train.json``; after the
evaluation ``robust.pt`` (per-sample outcomes of the paper's PGD),
``autoattack.pt`` (AutoAttack's, where measured: the worst of both per image
when the record's entry says ``mode`` cascade), ``autoattack_examples.pt`` (a
few images PGD called robust and AutoAttack broke) and ``result.json``. Every file
is written atomically (temporary file, then rename), and ``result.json`` last:
its presence means the run is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imalib.config import RunConfig
from imalib.data import Splits, load_splits
from imalib.device import device_name
from imalib.errors import CheckpointError, ConfigError
from imalib.evaluate import RobustnessResult, evaluate_robustness
from imalib.io import load_state, load_torch, save_torch, write_json
from imalib.methods import build_method
from imalib.models import build_model
from imalib.records import RESULT_FILE, AutoAttackEntry, Environment, ResultRecord, read_record
from imalib.train import TrainResult, fit, make_optimizer

if TYPE_CHECKING:
    from imalib.autoattack import BrokenExamples

EVAL_PROTOCOL = (
    "first-misclassified: each PGD run stops a sample at its first misclassified iterate and counts it "
    "broken, whatever a later forward pass says (never weaker than judging the final iterate, as the "
    "paper's advertorch loop did); TF32 off"
)
SECONDS_NOTE = "measured on the machine in 'environment'; train_seconds excludes evaluation"


@dataclass
class Run:
    """A finished run: the trained model, its configuration and its typed result record."""

    path: Path
    model: nn.Module
    config: RunConfig
    record: ResultRecord
    has_weights: bool = True


def load_margins(run: Run) -> torch.Tensor | None:
    """The final margin store of ``run`` (IMA, MMA) from its ``margins.pt``, or None."""
    file = run.path / "margins.pt"
    return load_torch(file) if file.exists() else None


def run_dir(config: RunConfig, results_root: str | Path) -> Path:
    return Path(results_root) / config.dataset / f"{config.label}-{config.norm}-{config.hash()}"


def splits_of(config: RunConfig, data_root: str | Path | None = None) -> Splits:
    """The data of run ``config``: the only place a run's splits are derived from its configuration."""
    return load_splits(
        config.dataset,
        root=data_root,
        n_train=config.n_train,
        n_test=config.n_test,
        seed=config.seed,
        params=dict(config.data_params),
    )


def environment() -> Environment:
    """Library versions, hardware and the GPU numerics flags, recorded with every result (imalib.device)."""
    from imalib.device import environment as device_environment

    return Environment.from_json(device_environment())


def _check_writable(path: Path) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(
            f"cannot write results under {path}: {probe} is a file, not a directory; choose another output directory"
        )
    if not os.access(probe, os.W_OK):
        raise PermissionError(
            f"cannot write results under {path}: {probe} is not writable; choose another output directory"
        )


def _is_trained(path: Path) -> bool:
    return (path / "train.json").exists() and (path / "model.pt").exists()


def _train(
    config: RunConfig, path: Path, splits: Splits, *, device: str, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config`` on ``splits`` into ``path``; returns the trained model (on the CPU) and the train log."""
    _check_writable(path)
    method = build_method(config.method, eps=config.eps, norm=config.norm, params=dict(config.method_params))
    torch.manual_seed(config.seed)
    model = build_model(config.dataset).to(device)
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob(".*.tmp"):  # a temporary file from a write that a kill interrupted
        leftover.unlink()
    write_json(path / "config.json", config.to_dict())
    trained: TrainResult = fit(
        model,
        method,
        splits.train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=optimizer,
        seed=config.seed,
        clip=splits.clip,
        device=device,
        checkpoint=path / "checkpoint.pt",
        progress=progress,
    )
    save_torch(path / "model.pt", model.to("cpu").state_dict())
    log: dict[str, Any] = {
        "history": trained.history,
        "data": splits.note,
        "n_train": len(splits.train),
        "train_seconds": sum(entry["seconds"] for entry in trained.history),
    }
    if trained.margins is not None:
        save_torch(path / "margins.pt", trained.margins.values)
        counts, edges = trained.margins.histogram()
        log["margins"] = {
            "mean": float(trained.margins.values.mean()),
            "counts": counts.tolist(),
            "edges": edges.tolist(),
        }
    write_json(path / "train.json", log)
    checkpoint = path / "checkpoint.pt"
    if checkpoint.exists():
        checkpoint.unlink()
    return model, log


def train_run(
    config: RunConfig,
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Train ``config`` into its run directory (resuming from ``checkpoint.pt``); returns the directory.

    Writes ``config.json`` first, ``checkpoint.pt`` after every epoch, then
    ``model.pt``, ``margins.pt`` (IMA / MMA) and ``train.json`` (the per-epoch
    log). A run whose ``train.json`` exists is not trained again.
    """
    path = run_dir(config, results_root)
    if not _is_trained(path):
        _check_writable(path)
        _train(config, path, splits_of(config, data_root), device=device_name(device), progress=progress)
    return path


def _load_trained(path: Path) -> tuple[RunConfig, nn.Module, dict[str, Any]]:
    """The configuration, the trained model (on the CPU) and the train log of a trained run directory."""
    if not (path / "train.json").exists():
        raise FileNotFoundError(f"{path} holds no trained model (no train.json); train it first")
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    log = json.loads((path / "train.json").read_text())
    model = build_model(config.dataset)
    load_state(model, load_torch(path / "model.pt"), path / "model.pt")
    return config, model, log


AUTOATTACK_FILES = {
    "custom": ("autoattack", "autoattack.pt"),
    "standard": ("autoattack_standard", "autoattack_standard.pt"),
}
EXAMPLES_FILE = "autoattack_examples.pt"
EXAMPLES_PER_LEVEL = 2


def _wants_autoattack(config: RunConfig, autoattack: bool | None) -> bool:
    from imalib.profiles import autoattack_by_default

    return autoattack_by_default(config.dataset, config.profile) if autoattack is None else autoattack


def _subset(n_test: int, n_images: int | None, seed: int) -> list[int] | None:
    """The test images of the check of the check: ``n_images`` of them, drawn with ``seed``, in order."""
    if n_images is None or n_images >= n_test:
        return None
    if n_images < 1:
        raise ConfigError(f"n_images={n_images} must be at least 1")
    chosen = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:n_images]
    return sorted(int(i) for i in chosen)


def _measure_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pgd: RobustnessResult,
    config: RunConfig,
    splits: Splits,
    *,
    version: str,
    indices: list[int] | None,
    progress: bool,
    levels: list[int] | None = None,
    cascade: bool = True,
) -> tuple[AutoAttackEntry, torch.Tensor]:
    """AutoAttack on the test images ``indices`` (all when None) at the PGD levels ``levels`` (all when None),
    and its per-image outcome.

    ``cascade`` (the default) attacks, at each eps, only the images PGD left robust: the outcome is then the
    worst of both per image, and the entry has no AutoAttack-alone accuracy. ``cascade=False`` attacks every
    image classified correctly on clean data (the outcome is AutoAttack alone).
    """
    from imalib.autoattack import evaluate_autoattack, worst_case

    if indices is not None:
        x, y = x[indices], y[indices]
        pgd = RobustnessResult(eps=pgd.eps, robust=pgd.robust[:, indices], norm=pgd.norm, seconds=pgd.seconds)
    if levels is not None:
        pgd = RobustnessResult(
            eps=tuple(pgd.eps[k] for k in levels), robust=pgd.robust[levels], norm=pgd.norm, seconds=pgd.seconds
        )
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    result = evaluate_autoattack(
        model,
        x,
        y,
        norm=config.norm,
        eps_list=pgd.eps,
        clip=splits.clip,
        num_classes=num_classes,
        version=version,  # type: ignore[arg-type]
        seed=config.seed,
        batch_size=config.eval_batch,
        progress=progress,
        candidates=pgd.robust if cascade else None,
    )
    both = worst_case(pgd, result.robustness)
    entry = AutoAttackEntry(
        eps=result.robustness.eps,
        accuracy=None if cascade else tuple(result.robustness.accuracy),
        worst_of_both=tuple(both.accuracy),
        pgd_accuracy=tuple(pgd.accuracy),
        n_images=int(y.shape[0]),
        settings=result.settings.to_dict(),
        seconds=result.robustness.seconds,
        level_seconds=result.level_seconds,
        indices=None if indices is None else tuple(indices),
        mode="cascade" if cascade else "full",
        attacked=result.attacked,
    )
    return entry, result.robustness.robust


def _save_examples(
    path: Path,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pgd_robust: torch.Tensor,
    autoattack_robust: torch.Tensor,
    config: RunConfig,
    splits: Splits,
) -> None:
    """Write ``autoattack_examples.pt``: a few images per level that PGD left robust and AutoAttack broke."""
    from imalib.autoattack import broken_examples

    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    examples = broken_examples(
        model,
        x,
        y,
        pgd_robust,
        autoattack_robust,
        norm=config.norm,
        eps_list=config.eval_eps,
        clip=splits.clip,
        num_classes=num_classes,
        seed=config.seed,
        count=EXAMPLES_PER_LEVEL,
    )
    save_torch(path / EXAMPLES_FILE, examples.to_dict())


def load_examples(path: str | Path) -> BrokenExamples | None:
    """The images of a run that PGD called robust and AutoAttack broke (None: AutoAttack not run with them)."""
    from imalib.autoattack import BrokenExamples

    file = Path(path) / EXAMPLES_FILE
    return BrokenExamples.from_dict(load_torch(file)) if file.exists() else None


def add_autoattack_examples(path: str | Path, *, data_root: str | Path | None = None, device: str = "auto") -> int:
    """Write ``autoattack_examples.pt`` for a run evaluated with AutoAttack whose weights exist; the count kept.

    The evaluation writes this file itself; this is for runs whose AutoAttack pass predates it.
    """
    path = Path(path)
    aa = load_autoattack(path)
    if aa is None:
        raise FileNotFoundError(f"{path} has no autoattack.pt: run 'imalib evaluate --attack autoattack {path}' first")
    if not (path / "model.pt").exists():
        raise CheckpointError(f"{path} has no model.pt: train the run again, then run this again")
    config, model, _ = _load_trained(path)
    splits = splits_of(config, data_root)
    device = device_name(device)
    model.to(device).eval()
    x, y = splits.test.inputs().to(device), splits.test.y.to(device)
    _save_examples(path, model, x, y, load_robustness(path).robust, aa, config, splits)
    model.to("cpu")
    examples = load_examples(path)
    return 0 if examples is None else len(examples)


def _evaluate(
    path: Path,
    config: RunConfig,
    model: nn.Module,
    log: dict[str, Any],
    splits: Splits,
    *,
    device: str,
    autoattack: bool | None = None,
    progress: bool = False,
    full_autoattack: bool = False,
) -> ResultRecord:
    """The paper's evaluation of ``model`` on ``splits.test`` (then AutoAttack where asked or the profile says so:
    on the images PGD left robust, or with ``full_autoattack`` on every image); writes ``robust.pt``,
    ``autoattack.pt`` and then ``result.json``."""
    model.to(device).eval()
    x_test, y_test = splits.test.inputs().to(device), splits.test.y.to(device)
    robustness = evaluate_robustness(
        model,
        x_test,
        y_test,
        norm=config.norm,
        eps_list=config.eval_eps,
        steps=config.eval_steps,
        clip=splits.clip,
        batch_size=config.eval_batch,
        seed=config.seed,
        progress=progress,
    )
    record = ResultRecord.from_json(
        {
            "dataset": config.dataset,
            "method": config.method,
            "label": config.label,
            "norm": config.norm,
            "profile": config.profile,
            "seed": config.seed,
            "config_hash": config.hash(),
            "config": config.to_dict(),
            "data": splits.note,
            "n_train": log["n_train"],
            "n_test": len(splits.test),
            "eps": list(robustness.eps),
            "accuracy": robustness.accuracy,
            "envelope": robustness.envelope,
            "rises": robustness.rises,
            "history": log["history"],
            "margins": log.get("margins"),
            "train_seconds": log["train_seconds"],
            "eval_seconds": robustness.seconds,
            "device": device,
            "environment": environment().to_json(),
            "eval_protocol": EVAL_PROTOCOL,
            "seconds_note": SECONDS_NOTE,
        }
    )
    save_torch(path / "robust.pt", robustness.robust)
    stale = path / AUTOATTACK_FILES["standard"][1]
    if stale.exists():  # measured against the previous PGD outcome
        stale.unlink()
    if _wants_autoattack(config, autoattack):
        entry, robust = _measure_autoattack(
            model, x_test, y_test, robustness, config, splits, version="custom", indices=None, progress=progress,
            cascade=not full_autoattack,
        )  # fmt: skip
        save_torch(path / AUTOATTACK_FILES["custom"][1], robust)
        _save_examples(path, model, x_test, y_test, robustness.robust, robust, config, splits)
        record = replace(record, autoattack=entry)
    write_json(path / RESULT_FILE, record.to_json())
    return record


def evaluate_run(
    path: str | Path,
    *,
    data_root: str | Path | None = None,
    device: str = "auto",
    autoattack: bool | None = None,
    progress: bool = False,
    full_autoattack: bool = False,
) -> ResultRecord:
    """Run the paper's evaluation on a trained run directory and write ``result.json`` (atomically).

    ``autoattack`` adds AutoAttack after PGD (None: where the profile says so,
    :attr:`imalib.profiles.Scale.autoattack`), on the images PGD left robust
    (the cascade) or, with ``full_autoattack``, on every image, which also
    measures AutoAttack alone; ``progress`` shows progress bars.
    """
    path = Path(path)
    config, model, log = _load_trained(path)
    return _evaluate(
        path,
        config,
        model,
        log,
        splits_of(config, data_root),
        device=device_name(device),
        autoattack=autoattack,
        progress=progress,
        full_autoattack=full_autoattack,
    )


def _retrain_command(config: RunConfig, root: Path) -> str:
    eps = f" --eps {config.eps:g}" if config.eps else ""
    return (
        f"imalib train --dataset {config.dataset} --method {config.method} --norm {config.norm}{eps} "
        f"--profile {config.profile} --seed {config.seed} --output {root}"
    )


def add_autoattack(
    path: str | Path,
    *,
    version: str = "custom",
    n_images: int | None = None,
    eps: Sequence[float] | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    full: bool = False,
) -> ResultRecord:
    """Add (or refresh) AutoAttack in an evaluated run's record, keeping its PGD numbers as they are.

    ``version="custom"`` writes the ``autoattack`` entry and ``autoattack.pt``
    (all levels; the images PGD left robust, or every image with ``full``,
    which also measures AutoAttack alone); ``version="standard"`` the ``autoattack_standard``
    entry and ``autoattack_standard.pt``, on ``n_images`` test images drawn
    with the run's seed and at the levels ``eps`` (default: all of the run's),
    the check of the check. Needs the run's weights.
    """
    if version not in AUTOATTACK_FILES:
        raise ConfigError(f"version={version!r}: use 'custom' or 'standard'")
    if eps is not None and version == "custom":
        raise ConfigError("eps= goes with version='standard'; the custom AutoAttack runs at every level of the run")
    path = Path(path)
    if not (path / RESULT_FILE).exists():
        raise FileNotFoundError(f"{path} has no result.json: evaluate it first with 'imalib evaluate {path}'")
    record = read_record(path / RESULT_FILE)
    if not (path / "model.pt").exists():
        raise CheckpointError(
            f"{path} has no model.pt (image weights are not committed): train it again with "
            f"'{_retrain_command(record.config, path.parent.parent)}', then run this again"
        )
    config, model, _ = _load_trained(path)
    pgd = load_robustness(path)
    splits = splits_of(config, data_root)
    if pgd.robust.shape[1] != len(splits.test):
        raise ConfigError(
            f"{path}: robust.pt holds {pgd.robust.shape[1]} images but the run has "
            f"{len(splits.test)} test images; evaluate it again with 'imalib evaluate {path}'"
        )
    device = device_name(device)
    model.to(device).eval()
    x_test, y_test = splits.test.inputs().to(device), splits.test.y.to(device)
    indices = _subset(len(splits.test), n_images, config.seed)
    levels = None
    if eps is not None:
        unknown = [e for e in eps if float(e) not in pgd.eps]
        if unknown or not eps:
            raise ConfigError(f"eps {list(eps)}: choose among the run's levels {list(pgd.eps)}")
        levels = sorted({pgd.eps.index(float(e)) for e in eps})
    entry, robust = _measure_autoattack(
        model,
        x_test,
        y_test,
        pgd,
        config,
        splits,
        version=version,
        indices=indices,
        progress=progress,
        levels=levels,
        cascade=version == "custom" and not full,
    )
    name, file = AUTOATTACK_FILES[version]
    save_torch(path / file, robust)
    if version == "custom":
        _save_examples(path, model, x_test, y_test, pgd.robust, robust, config, splits)
    record = replace(record, autoattack=entry) if name == "autoattack" else replace(record, autoattack_standard=entry)
    write_json(path / RESULT_FILE, record.to_json())
    model.to("cpu")
    return record


def load_autoattack(path: str | Path, version: str = "custom") -> torch.Tensor | None:
    """The per-image AutoAttack outcome of a run ([eps, images]; see the record's entry for the images), or None.

    For an entry in the cascade mode it is the worst of PGD and AutoAttack (AutoAttack ran on PGD's survivors).
    """
    file = Path(path) / AUTOATTACK_FILES[version][1]
    return load_torch(file) if file.exists() else None


def load_robustness(path: str | Path) -> RobustnessResult:
    """The per-sample outcomes of an evaluated run (``robust.pt`` with its record's eps and timing)."""
    path = Path(path)
    record = read_record(path / RESULT_FILE)
    robust = load_torch(path / "robust.pt")
    return RobustnessResult(eps=record.eps, robust=robust, norm=record.norm, seconds=record.eval_seconds)


def run_experiment(
    config: RunConfig,
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = False,
    autoattack: bool | None = None,
    full_autoattack: bool = False,
) -> Run:
    """Load the run for ``config`` if it is complete, else train (resuming) and evaluate it.

    The data is loaded once and the trained model stays in memory from training
    to evaluation (the files are still written, as by :func:`train_run` and
    :func:`evaluate_run`). ``force=True`` deletes the run directory first and
    starts from scratch. ``autoattack`` adds AutoAttack to the evaluation
    (None: where the profile says so; ``full_autoattack``: on every image, not
    only those PGD left robust); ``progress`` shows progress bars.
    """
    path = run_dir(config, results_root)
    device = device_name(device)
    if force:
        shutil.rmtree(path, ignore_errors=True)
    if (path / RESULT_FILE).exists():
        return load_run(path)
    splits = splits_of(config, data_root)
    if _is_trained(path):
        _, model, log = _load_trained(path)
    else:
        model, log = _train(config, path, splits, device=device, progress=progress)
    record = _evaluate(
        path, config, model, log, splits, device=device, autoattack=autoattack, progress=progress,
        full_autoattack=full_autoattack,
    )  # fmt: skip
    model.to("cpu").eval()
    return Run(path=path, model=model, config=config, record=record, has_weights=True)


def load_run(path: str | Path, *, require_weights: bool = True) -> Run:
    """Load a finished run directory back into (model, config, typed record).

    The weights of the image models are not committed; with
    ``require_weights=False`` such a run still loads (``has_weights`` False,
    the model freshly initialised) so that its result record can be reported.
    """
    path = Path(path)
    result_file = path / RESULT_FILE
    if not result_file.exists():
        raise FileNotFoundError(f"{path} holds no finished run (no result.json); run it with run_experiment")
    record = read_record(result_file)
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    if config.hash() != record.config_hash:
        raise ConfigError(f"{path}: config.json does not match the hash recorded in result.json")
    model = build_model(config.dataset)
    weights = path / "model.pt"
    if weights.exists():
        load_state(model, load_torch(weights), weights)
    elif require_weights:
        raise CheckpointError(
            f"{path} has no model.pt (the weights of large models are not committed); run it again to get them"
        )
    model.eval()
    return Run(path=path, model=model, config=config, record=record, has_weights=weights.exists())
