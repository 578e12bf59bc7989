"""The paper's evaluation: 100-step PGD with cross-entropy and margin loss, worst case per sample."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from imalib.attacks.pgd import pgd_tracked
from imalib.context import frozen_eval
from imalib.device import exact_float32, free_cuda_bytes
from imalib.norms import Clip, Norm, check_norm, random_in_ball

RISE_TOLERANCE = 0.0


@dataclass(frozen=True)
class RobustnessResult:
    """Per-sample outcome of the attacks at every noise level.

    ``robust[k, i]`` is True when sample i is classified correctly on clean data
    and under every attack at noise level ``eps[k]`` (eps 0 is clean accuracy).
    """

    eps: tuple[float, ...]
    robust: Tensor
    norm: str
    seconds: float

    @property
    def accuracy(self) -> list[float]:
        """The paper's number: the share of test samples that survive at each eps."""
        return [float(v) for v in self.robust.float().mean(dim=1)]

    @property
    def envelope(self) -> list[float]:
        """Monotone envelope: a sample broken at some eps counts as broken at every larger eps."""
        survived = torch.cummin(self.robust.int(), dim=0).values
        return [float(v) for v in survived.float().mean(dim=1)]

    @property
    def rises(self) -> list[bool]:
        """True where accuracy is higher than at the previous (smaller) eps: a gradient-masking signal."""
        acc = self.accuracy
        return [False] + [acc[k] > acc[k - 1] + RISE_TOLERANCE for k in range(1, len(acc))]

    def to_frame(self, **labels: Any) -> pd.DataFrame:
        """A tidy table: one row per eps with accuracy, envelope, the rise flag and ``labels``."""
        frame = pd.DataFrame(
            {"eps": list(self.eps), "accuracy": self.accuracy, "envelope": self.envelope, "rises": self.rises}
        )
        for key, value in labels.items():
            frame.insert(0, key, value)
        return frame


def _seeded(seed: int, *parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    value = seed
    for part in parts:
        value = value * 1_000_003 + part
    generator.manual_seed(value % (2**63))
    return generator


def _bar(show: bool, total: int, attack: str, eps: list[float]) -> Any:
    """A tqdm bar over the (noise level, image) pairs one attack runs on, or None."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=attack, unit="image", leave=False, postfix=f"eps {', '.join(f'{e:g}' for e in eps)}")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Predicted labels in eval mode, in batches."""
    with frozen_eval(model):
        return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])


def stack_rows(
    batch_size: int, n_levels: int, *, bytes_per_row: int | None = None, budget_bytes: int | None = None
) -> int:
    """How many (level, sample) rows one stacked PGD call takes: ``batch_size`` per noise level, cut to the budget.

    Without a budget (the CPU) every level's batch runs in one call, as the
    committed records were made; with one, the stack holds at most
    ``budget_bytes // bytes_per_row`` rows (at least one).
    """
    full = batch_size * max(1, n_levels)
    if budget_bytes is None or bytes_per_row is None or bytes_per_row <= 0:
        return full
    return max(1, min(full, budget_bytes // bytes_per_row))


def measure_bytes_per_row(model: nn.Module, x: Tensor, y: Tensor, loss: str = "ce", probe: int = 16) -> int | None:
    """Peak CUDA memory of one input-gradient pass, per input row (None off CUDA).

    Measured on ``probe`` rows of ``x`` and padded by half again for the
    attack's own tensors (iterate, start, gradient, compaction copies).
    """
    if x.device.type != "cuda" or x.shape[0] == 0:
        return None
    from imalib.losses import attack_loss

    rows = min(probe, x.shape[0])
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    with frozen_eval(model):
        sample = x[:rows].detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(attack_loss(loss)(model(sample), y[:rows]).sum(), sample)
    del grad, sample
    peak = torch.cuda.max_memory_allocated(x.device) - before
    return max(1, int(1.5 * peak / rows))


def evaluate_robustness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps_list: Sequence[float],
    steps: int = 100,
    step_fraction: float = 0.1,
    losses: Sequence[str] = ("ce", "margin"),
    restarts: int = 1,
    clip: Clip,
    batch_size: int = 1000,
    seed: int = 0,
    fast: bool = True,
    max_stack: int | None = None,
    memory_fraction: float = 0.5,
    progress: bool = False,
) -> RobustnessResult:
    """Robust accuracy under the paper's attack at each noise level.

    Per eps > 0: PGD with ``steps`` iterations (100), step eps * ``step_fraction``
    (eps / 10) and a random start, once per loss in ``losses`` (cross-entropy,
    then the margin loss) and ``restarts`` times each; a sample counts as correct
    only if it is correct on clean data and survives every attack.

    ``fast=True`` spends effort only where it can change the answer: samples
    wrong on clean data are never attacked; a later attack runs only on samples
    that survived the earlier ones; and each PGD run freezes a sample at its
    first misclassified iterate (``stop_on_success``), which can only make the
    attack stronger than returning the last iterate. A sample the attack saw
    misclassified counts as broken whatever a later forward pass says about its
    frozen iterate (on a GPU another batch or kernel can move that verdict).
    ``fast=False`` runs every attack on every clean-correct sample and judges the
    final iterate, exactly as the paper's advertorch loop did.

    All noise levels run stacked in one PGD call; ``max_stack`` caps its rows.
    By default there is no cap on the CPU, and on CUDA the cap keeps the
    attack's activations within ``memory_fraction`` of the free GPU memory.
    The random starts do not depend on the cap, so neither do the verdicts
    (bit for bit where the model's forward pass does not depend on the batch).
    The whole evaluation runs with TF32 off. ``progress`` shows a bar per attack
    (its loss and noise levels, and an ETA).
    """
    norm = check_norm(norm)
    if list(eps_list) != sorted(eps_list):
        raise ValueError(f"eps_list={list(eps_list)} must be in increasing order")
    if max_stack is not None and max_stack <= 0:
        raise ValueError(f"max_stack={max_stack} must be a positive number of rows (or None)")
    with exact_float32():
        return _evaluate(
            model,
            x,
            y,
            norm=norm,
            eps_list=eps_list,
            steps=steps,
            step_fraction=step_fraction,
            losses=losses,
            restarts=restarts,
            clip=clip,
            batch_size=batch_size,
            seed=seed,
            fast=fast,
            max_stack=max_stack,
            memory_fraction=memory_fraction,
            progress=progress,
        )


def _evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps_list: Sequence[float],
    steps: int,
    step_fraction: float,
    losses: Sequence[str],
    restarts: int,
    clip: Clip,
    batch_size: int,
    seed: int,
    fast: bool,
    max_stack: int | None,
    memory_fraction: float,
    progress: bool,
) -> RobustnessResult:
    began = time.perf_counter()
    clean = predict(model, x) == y
    alive = clean.unsqueeze(0).repeat(len(eps_list), 1)
    levels = [k for k, eps in enumerate(eps_list) if eps > 0]
    stack = max_stack
    if stack is None:
        free = free_cuda_bytes(x.device)
        budget = None if free is None else int(memory_fraction * free)
        stack = stack_rows(
            batch_size,
            len(levels),
            budget_bytes=budget,
            bytes_per_row=measure_bytes_per_row(model, x, y) if budget is not None else None,
        )
    for a, loss in enumerate(losses):
        for r in range(restarts):
            # Every (noise level, sample) pair still to attack, with its random start drawn from the generator
            # of (level, loss, restart, chunk); all levels then run stacked in one PGD (per-sample eps), which
            # amortises the per-step overhead of small models over len(eps_list) times more rows.
            keys, rows, radii, starts = [], [], [], []
            for k in levels:
                targets = alive[k].nonzero().squeeze(1) if fast else clean.nonzero().squeeze(1)
                for start in range(0, targets.numel(), batch_size):
                    chunk = targets[start : start + batch_size]
                    generator = _seeded(seed, k, a, r, start, device=x.device)
                    keys.append(torch.full_like(chunk, k))
                    rows.append(chunk)
                    radii.append(torch.full((chunk.numel(),), float(eps_list[k]), dtype=x.dtype, device=x.device))
                    starts.append(random_in_ball(x[chunk], float(eps_list[k]), norm, generator))
            if not rows:
                continue
            key, row, radius, init = torch.cat(keys), torch.cat(rows), torch.cat(radii), torch.cat(starts)
            bar = _bar(progress, row.numel(), f"PGD-{loss} {norm}", [float(eps_list[k]) for k in levels])
            for s in range(0, row.numel(), stack):
                part = slice(s, s + stack)
                x_adv, seen = pgd_tracked(
                    model,
                    x[row[part]],
                    y[row[part]],
                    radius[part],
                    norm=norm,
                    steps=steps,
                    step_size=radius[part] * step_fraction,
                    loss=loss,
                    clip=clip,
                    delta_init=init[part],
                    stop_on_success=fast,
                )
                broken = seen | (predict(model, x_adv) != y[row[part]])
                alive[key[part][broken], row[part][broken]] = False
                if bar is not None:
                    bar.update(int(row[part].numel()))
            if bar is not None:
                bar.close()
    return RobustnessResult(
        eps=tuple(float(e) for e in eps_list), robust=alive.cpu(), norm=norm, seconds=time.perf_counter() - began
    )
