"""Run directories: train, evaluate and record one configuration, or load it back.

A run lives in ``<results>/<dataset>/<label>-<norm>-<hash>/`` and holds
``config.json``; while training ``checkpoint.pt``; after training ``model.pt``
(final weights), ``margins.pt`` (IMA / MMA) and ``train.json``; after the
evaluation ``robust.pt`` (per-sample outcomes) and ``result.json``. Every file
is written atomically (temporary file, then rename), and ``result.json`` last:
its presence means the run is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imalib.config import ConfigError, RunConfig
from imalib.data import load_splits
from imalib.device import device_name
from imalib.evaluate import evaluate_robustness
from imalib.io import CheckpointError, load_state, load_torch, save_torch, write_json
from imalib.methods import build_method
from imalib.models import build_model
from imalib.train import fit, make_optimizer


@dataclass
class Run:
    """A finished run: the trained model, its configuration and its result record."""

    path: Path
    model: nn.Module
    config: RunConfig
    result: dict[str, Any]
    has_weights: bool = True

    @property
    def margins(self) -> torch.Tensor | None:
        file = self.path / "margins.pt"
        return load_torch(file) if file.exists() else None


def run_dir(config: RunConfig, results_root: str | Path) -> Path:
    return Path(results_root) / config.dataset / f"{config.label}-{config.norm}-{config.hash()}"


def environment() -> dict[str, Any]:
    """Library versions, hardware and the GPU numerics flags, recorded with every result (imalib.device)."""
    from imalib.device import environment as device_environment

    return device_environment()


def _check_writable(path: Path) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write results under {path}: {probe} is a file, not a directory; choose "
                                 f"another output directory")
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"cannot write results under {path}: {probe} is not writable; choose another "
                              f"output directory")


def train_run(config: RunConfig, *, results_root: str | Path = "results", data_root: str | Path | None = None,
              device: str = "auto", progress: bool = True) -> Path:
    """Train ``config`` into its run directory (resuming from ``checkpoint.pt``); returns the directory.

    Writes ``config.json`` first, ``checkpoint.pt`` after every epoch, then
    ``model.pt``, ``margins.pt`` (IMA / MMA) and ``train.json`` (the per-epoch
    log). A run whose ``train.json`` exists is not trained again.
    """
    path = run_dir(config, results_root)
    if (path / "train.json").exists() and (path / "model.pt").exists():
        return path
    device = device_name(device)
    _check_writable(path)
    splits = load_splits(config.dataset, root=data_root, n_train=config.n_train, n_test=config.n_test,
                         seed=config.seed, params=dict(config.data_params))
    method = build_method(config.method, eps=config.eps, norm=config.norm, params=dict(config.method_params))
    torch.manual_seed(config.seed)
    model = build_model(config.dataset).to(device)
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob(".*.tmp"):  # a temporary file from a write that a kill interrupted
        leftover.unlink()
    write_json(path / "config.json", config.to_dict())
    trained = fit(model, method, splits.train, epochs=config.epochs, batch_size=config.batch_size,
                  optimizer=optimizer, seed=config.seed, clip=splits.clip, device=device,
                  checkpoint=path / "checkpoint.pt", progress=progress)
    save_torch(path / "model.pt", model.to("cpu").state_dict())
    log: dict[str, Any] = {"history": trained.history, "data": splits.note, "n_train": len(splits.train),
                           "train_seconds": sum(entry["seconds"] for entry in trained.history)}
    if trained.margins is not None:
        save_torch(path / "margins.pt", trained.margins.values)
        counts, edges = trained.margins.histogram()
        log["margins"] = {"mean": float(trained.margins.values.mean()), "counts": counts.tolist(),
                          "edges": edges.tolist()}
    write_json(path / "train.json", log)
    checkpoint = path / "checkpoint.pt"
    if checkpoint.exists():
        checkpoint.unlink()
    return path


def evaluate_run(path: str | Path, *, data_root: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Run the paper's evaluation on a trained run directory and write ``result.json`` (atomically)."""
    path = Path(path)
    device = device_name(device)
    if not (path / "train.json").exists():
        raise FileNotFoundError(f"{path} holds no trained model (no train.json); train it first")
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    log = json.loads((path / "train.json").read_text())
    model = build_model(config.dataset)
    load_state(model, load_torch(path / "model.pt"), path / "model.pt")
    model.to(device).eval()
    splits = load_splits(config.dataset, root=data_root, n_train=config.n_train, n_test=config.n_test,
                         seed=config.seed, params=dict(config.data_params))
    x_test, y_test = splits.test.inputs().to(device), splits.test.y.to(device)
    robustness = evaluate_robustness(model, x_test, y_test, norm=config.norm, eps_list=config.eval_eps,  # type: ignore[arg-type]
                                     steps=config.eval_steps, clip=splits.clip, batch_size=config.eval_batch,
                                     seed=config.seed)
    result: dict[str, Any] = {
        "dataset": config.dataset, "method": config.method, "label": config.label, "norm": config.norm,
        "profile": config.profile, "seed": config.seed, "config_hash": config.hash(), "config": config.to_dict(),
        "data": splits.note, "n_train": log["n_train"], "n_test": len(splits.test),
        "eps": list(robustness.eps), "accuracy": robustness.accuracy, "envelope": robustness.envelope,
        "rises": robustness.rises, "history": log["history"], "margins": log.get("margins"),
        "train_seconds": log["train_seconds"], "eval_seconds": robustness.seconds, "device": device,
        "environment": environment(),
        "eval_protocol": ("first-misclassified: each PGD run stops a sample at its first misclassified iterate "
                          "and counts it broken, whatever a later forward pass says (never weaker than judging the "
                          "final iterate, as the paper's advertorch loop did); TF32 off"),
        "seconds_note": "measured on the machine in 'environment'; train_seconds excludes evaluation",
    }
    save_torch(path / "robust.pt", robustness.robust)
    write_json(path / "result.json", result)
    return result


def run_experiment(config: RunConfig, *, results_root: str | Path = "results", data_root: str | Path | None = None,
                   device: str = "auto", force: bool = False, progress: bool = True) -> Run:
    """Load the run for ``config`` if it is complete, else train (resuming) and evaluate it.

    ``force=True`` deletes the run directory first and starts from scratch.
    """
    path = run_dir(config, results_root)
    if force:
        shutil.rmtree(path, ignore_errors=True)
    if not (path / "result.json").exists():
        train_run(config, results_root=results_root, data_root=data_root, device=device, progress=progress)
        evaluate_run(path, data_root=data_root, device=device)
    return load_run(path)


def load_run(path: str | Path, *, require_weights: bool = True) -> Run:
    """Load a finished run directory back into (model, config, results).

    The weights of the image models are not committed; with
    ``require_weights=False`` such a run still loads (``has_weights`` False,
    the model freshly initialised) so that its result record can be reported.
    """
    path = Path(path)
    result_file = path / "result.json"
    if not result_file.exists():
        raise FileNotFoundError(f"{path} holds no finished run (no result.json); run it with run_experiment")
    result = json.loads(result_file.read_text())
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    if config.hash() != result.get("config_hash"):
        raise ConfigError(f"{path}: config.json does not match the hash recorded in result.json")
    model = build_model(config.dataset)
    weights = path / "model.pt"
    if weights.exists():
        load_state(model, load_torch(weights), weights)
    elif require_weights:
        raise CheckpointError(f"{path} has no model.pt (the weights of large models are not committed); "
                              f"run it again to get them")
    model.eval()
    return Run(path=path, model=model, config=config, result=result, has_weights=weights.exists())


