"""The one training loop: any method, checkpoints every epoch, bit-identical resume.

A checkpoint is ``{"format", "model", "optimizer", "method_state", "epoch",
"history"}``, written by :func:`save_checkpoint` and read by
:func:`load_checkpoint` (``fit`` and the benchmarks use the pair). A checkpoint
of the first format (``"margins"`` in place of ``"method_state"``) still
resumes; anything else is refused with one line that says to restart the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from imalib.data.base import ArrayDataset
from imalib.errors import CheckpointError, TrainingDiverged
from imalib.io import load_state, load_torch, save_torch
from imalib.margins import MarginStore
from imalib.methods.base import BatchContext, Method, MethodState, NoState
from imalib.norms import Clip

CHECKPOINT_FORMAT = 2


@dataclass
class TrainResult:
    """Per-epoch log and the method's final state."""

    history: list[dict[str, Any]] = field(default_factory=list)
    state: MethodState = field(default_factory=NoState)

    @property
    def margins(self) -> MarginStore | None:
        """The final margin store (IMA, MMA), or None for methods without margins."""
        return self.state.margins


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: MethodState,
    epoch: int,
    history: list[dict[str, Any]],
) -> None:
    """Write the checkpoint after ``epoch`` epochs (atomically): weights, optimizer, method state, log."""
    save_torch(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "method_state": state.state_dict(),
            "epoch": epoch,
            "history": history,
        },
    )


def load_checkpoint(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, state: MethodState
) -> tuple[int, list[dict[str, Any]]]:
    """Restore ``model``, ``optimizer`` and ``state`` from ``path``; returns (epochs done, history).

    Every problem (not a checkpoint, another model, another run's state, an
    unknown format) is a one-line :class:`CheckpointError` saying to delete the
    file and restart that run.
    """
    saved = load_torch(path)
    if not isinstance(saved, dict) or "model" not in saved:
        raise CheckpointError(f"{path} is not a training checkpoint of imalib; delete it to start again")
    version = saved.get("format", 1)
    if version not in (1, CHECKPOINT_FORMAT):
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, which this imalib cannot read; "
            f"delete it to start that run again"
        )
    load_state(model, saved["model"], path)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        if version == 1:  # the first format kept the margin store itself (or None) under "margins"
            margins = saved["margins"]
            state.load_state_dict({} if margins is None else {"margins": margins})
        else:
            state.load_state_dict(saved["method_state"])
        return int(saved["epoch"]), list(saved["history"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path} is incomplete or from another run ({type(error).__name__}: "
            f"{error}); delete it to start that run again"
        ) from None


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream): resuming needs no saved RNG state."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch * 101 + stream)
    return generator


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with default parameters (the paper), or AdamW (its COVID-19 'ce' model: wd 0.01)."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is not supported: use 'adam' or 'adamw'")


def fit(
    model: nn.Module,
    method: Method,
    train: ArrayDataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    seed: int,
    clip: Clip,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    progress: bool = True,
    stop_after_batches: int | None = None,
) -> TrainResult:
    """Train ``model`` with ``method``'s per-batch loss for ``epochs`` epochs.

    Every epoch draws its shuffling and attack randomness from generators seeded
    by (seed, epoch), so a run resumed from the checkpoint of epoch k ends
    bit-identical (on the CPU) to an uninterrupted one. After each epoch the
    method's ``end_epoch`` runs (IMA's Algorithm 2), then the checkpoint
    (model, optimizer, method state, epoch, log) is written atomically.

    ``stop_after_batches`` interrupts the run mid-epoch (for tests of resume).
    """
    state = method.init(len(train), epochs)
    result = TrainResult(state=state)
    start = 0
    model.to(device)  # before any optimizer state is loaded: torch moves that state to the parameters' device
    if checkpoint is not None and checkpoint.exists():
        start, result.history = load_checkpoint(checkpoint, model=model, optimizer=optimizer, state=state)
    seen_batches = 0
    for epoch in range(start, epochs):
        model.train()
        order = epoch_generator(seed, epoch, 0)
        ctx = BatchContext(
            clip=clip, generator=epoch_generator(seed, epoch, 1, device), epochs=epochs, batch_size=batch_size
        )
        totals: dict[str, float] = {}
        correct = 0
        began = time.perf_counter()
        batches = train.batches(batch_size, generator=order, device=device)
        bar = tqdm(
            batches,
            desc=f"{method.name} epoch {epoch + 1}/{epochs}",
            total=train.n_batches(batch_size),
            disable=not progress,
            leave=False,
        )
        for number, (x, y, idx) in enumerate(bar):
            out = method.batch_loss(model, x, y, idx, state, ctx)
            if not math.isfinite(out.loss.item()):
                where = f"epoch {epoch + 1}, batch {number + 1}"
                kept = f"the last good checkpoint ({checkpoint}) is kept" if checkpoint else "no checkpoint was written"
                raise TrainingDiverged(f"non-finite loss ({out.loss.item()}) at {where}; {kept}. Lower lr or eps.")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            correct += int((out.logits.detach().argmax(dim=1) == y).sum())
            for key, value in out.terms.items():
                totals[key] = totals.get(key, 0.0) + value * x.shape[0]
            seen_batches += 1
            if stop_after_batches is not None and seen_batches >= stop_after_batches:
                return result
        method.end_epoch(model, _Ordered(train, device), state, ctx)
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_acc": correct / len(train),
            "seconds": time.perf_counter() - began,
        }
        entry.update({key: value / len(train) for key, value in totals.items()})
        if state.margins is not None:
            entry["mean_margin"] = float(state.margins.values.mean())
        result.history.append(entry)
        if checkpoint is not None:
            save_checkpoint(
                checkpoint, model=model, optimizer=optimizer, state=state, epoch=epoch + 1, history=result.history
            )
    return result


@dataclass
class _Ordered:
    """The training set in its fixed order on ``device``, for Algorithm 2's pass."""

    data: ArrayDataset
    device: torch.device | str

    def ordered_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self.data.ordered_batches(batch_size, device=self.device)
