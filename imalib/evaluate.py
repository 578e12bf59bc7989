"""The paper's evaluation: 100-step PGD with cross-entropy and margin loss, worst case per sample."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from imalib.attacks.pgd import pgd
from imalib.context import frozen_eval
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
        frame = pd.DataFrame({"eps": list(self.eps), "accuracy": self.accuracy, "envelope": self.envelope,
                              "rises": self.rises})
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

    return tqdm(total=total, desc=attack, unit="image", leave=False,
                postfix=f"eps {', '.join(f'{e:g}' for e in eps)}")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Predicted labels in eval mode, in batches."""
    with frozen_eval(model):
        return torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])


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
    attack stronger than returning the last iterate. ``fast=False`` runs every
    attack on every clean-correct sample and judges the final iterate, exactly
    as the paper's advertorch loop did. ``progress`` shows a bar per attack
    (its loss and noise levels, and an ETA).
    """
    norm = check_norm(norm)
    if list(eps_list) != sorted(eps_list):
        raise ValueError(f"eps_list={list(eps_list)} must be in increasing order")
    began = time.perf_counter()
    clean = predict(model, x) == y
    alive = clean.unsqueeze(0).repeat(len(eps_list), 1)
    levels = [k for k, eps in enumerate(eps_list) if eps > 0]
    for a, loss in enumerate(losses):
        for r in range(restarts):
            # Every (noise level, sample) pair still to attack, with its random start drawn from the generator
            # of (level, loss, restart, chunk); all levels then run stacked in one PGD (per-sample eps), which
            # amortises the per-step overhead of small models over len(eps_list) times more rows.
            keys, rows, radii, starts = [], [], [], []
            for k in levels:
                targets = alive[k].nonzero().squeeze(1) if fast else clean.nonzero().squeeze(1)
                for start in range(0, targets.numel(), batch_size):
                    chunk = targets[start:start + batch_size]
                    generator = _seeded(seed, k, a, r, start, device=x.device)
                    keys.append(torch.full_like(chunk, k))
                    rows.append(chunk)
                    radii.append(torch.full((chunk.numel(),), float(eps_list[k]), dtype=x.dtype, device=x.device))
                    starts.append(random_in_ball(x[chunk], float(eps_list[k]), norm, generator))
            if not rows:
                continue
            key, row, radius, init = torch.cat(keys), torch.cat(rows), torch.cat(radii), torch.cat(starts)
            stack = batch_size * max(1, len(levels))
            bar = _bar(progress, row.numel(), f"PGD-{loss} {norm}", [float(eps_list[k]) for k in levels])
            for s in range(0, row.numel(), stack):
                part = slice(s, s + stack)
                x_adv = pgd(model, x[row[part]], y[row[part]], radius[part], norm=norm, steps=steps,
                            step_size=radius[part] * step_fraction, loss=loss, clip=clip, delta_init=init[part],
                            stop_on_success=fast)
                broken = predict(model, x_adv) != y[row[part]]
                alive[key[part][broken], row[part][broken]] = False
                if bar is not None:
                    bar.update(int(row[part].numel()))
            if bar is not None:
                bar.close()
    return RobustnessResult(eps=tuple(float(e) for e in eps_list), robust=alive.cpu(), norm=norm,
                            seconds=time.perf_counter() - began)
