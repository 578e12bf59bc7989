"""MMA: Max-Margin Adversarial training (Ding et al. 2019), as in its official code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imalib.attacks.pgd import pgd
from imalib.context import frozen_eval
from imalib.losses import soft_margin
from imalib.margins import MarginStore
from imalib.methods.base import (
    BatchContext,
    BatchSource,
    MarginState,
    StepOutput,
    ce_sum,
)
from imalib.norms import Clip, Norm, as_column, clip_box


@torch.no_grad()
def search_along_ray(
    model: nn.Module, x: Tensor, y: Tensor, unit: Tensor, start: Tensor, max_eps: float, n_search: int, clip: Clip
) -> Tensor:
    """MMA's bisection on the scalar eps along x + eps * unit, eps in [0, max_eps].

    Starts from ``start`` (where the AN-PGD point lies) and halves the bracket
    ``n_search`` times on the test soft_margin < 0 (still correct). Returns the
    last eps probed, which may exceed ``start``: the search extrapolates.
    """
    with frozen_eval(model):
        eps = start.clone()
        low = torch.zeros_like(eps)
        high = torch.full_like(eps, max_eps)
        still_correct = soft_margin(model(clip_box(x + as_column(eps, x) * unit, clip)), y) < 0
        for _ in range(n_search):
            low = torch.where(still_correct, torch.maximum(low, eps), low)
            high = torch.where(still_correct, high, torch.minimum(high, eps))
            eps = (low + high) / 2
            still_correct = soft_margin(model(clip_box(x + as_column(eps, x) * unit, clip)), y) < 0
    return eps


@dataclass(frozen=True)
class MMA:
    """MMA's loss: hinge on the margin found by AN-PGD, mixed with the clean loss.

    Per batch (official ``trainer.py``): correct = soft_margin(f(x), y) < 0;
    for correct samples AN-PGD (PGD at eps = max(mineps, E), eta = 2.5 eps /
    steps, soft-margin objective, random start) gives a direction, the
    bisection along it gives the margin estimate and x_adv; the MMA loss sums
    CE(f(x_adv)) over samples whose margin is below d_max (= ``eps``) and
    CE(f(x)) over wrong samples, divided by B; the gradient is 2/3 MMA + 1/3
    clean CE (mean). Wrong samples' margins restart from 0.
    Deviation: x_adv is clamped into the input box (the official code is not).

    Args:
        eps: d_max, the hinge threshold (paper: eps_max).
        mineps: the smallest PGD radius; None means 0.1 * d_max (the paper
            does not give it; MMA used 0.1 for MNIST L-inf, 0.5 for L2).
        search_max: the bisection's upper end as a multiple of d_max (1.05).
    """

    eps: float
    norm: Norm = "linf"
    steps: int = 20
    eps_iter_scale: float = 2.5
    n_search: int = 10
    mineps: float | None = None
    clean_weight: float = 1.0 / 3.0
    search_max: float = 1.05
    name: str = "mma"

    @property
    def min_eps(self) -> float:
        return self.mineps if self.mineps is not None else 0.1 * self.eps

    def init(self, n_train: int, epochs: int) -> MarginState:
        return MarginState(MarginStore(n_train, delta=self.min_eps, eps_max=self.search_max * self.eps))

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: MarginState, ctx: BatchContext
    ) -> StepOutput:
        margins = state.margins
        logits = model(x)
        clean = F.cross_entropy(logits, y)
        correct = soft_margin(logits.detach(), y) < 0
        mma_sum = ce_sum(logits[~correct], y[~correct])
        margins.set(idx[~correct], torch.zeros(int((~correct).sum())))
        if bool(correct.any()):
            xc, yc = x[correct], y[correct]
            prev = margins.get(idx[correct]).to(xc).clamp_min(self.min_eps)
            x_pgd = pgd(
                model,
                xc,
                yc,
                prev,
                norm=self.norm,
                steps=self.steps,
                step_size=self.eps_iter_scale * prev / self.steps,
                loss="slm",
                rand_init=True,
                clip=ctx.clip,
                generator=ctx.generator,
            )
            unit = (x_pgd - xc) / as_column(prev + 1e-12, xc)
            margin = search_along_ray(model, xc, yc, unit, prev, self.search_max * self.eps, self.n_search, ctx.clip)
            x_adv = clip_box(xc + as_column(margin, xc) * unit, ctx.clip)
            hinge = margin < self.eps
            mma_sum = mma_sum + ce_sum(model(x_adv[hinge]), yc[hinge])
            margins.set(idx[correct], margin)
        mma = mma_sum / x.shape[0]
        loss = (1.0 - self.clean_weight) * mma + self.clean_weight * clean
        return StepOutput(loss, logits, {"ce": clean.item(), "mma": mma.item()})

    def end_epoch(self, model: nn.Module, data: BatchSource, state: MarginState, ctx: BatchContext) -> None:
        return None
