"""adv-eps: vanilla 20-PGD adversarial training at a fixed noise level, eq. (2)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from imalib.attacks.pgd import pgd
from imalib.methods.base import (
    BatchContext,
    NoState,
    StatelessMethod,
    StepOutput,
    ce_sum,
)
from imalib.norms import Norm


@dataclass(frozen=True)
class AdvEps(StatelessMethod):
    """L_adv = (L_ce(x, y) + L_ce(x_eps, y)) / 2 with x_eps = PGD(x, y, eps).

    PGD: ``steps`` = N_PGD = 20, eta = alpha * eps / N_PGD with alpha = 4,
    random start, cross-entropy objective (section 3 of the paper).
    """

    eps: float
    norm: Norm = "linf"
    steps: int = 20
    alpha: float = 4.0
    name: str = "adv"

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: NoState, ctx: BatchContext
    ) -> StepOutput:
        x_adv = pgd(
            model,
            x,
            y,
            self.eps,
            norm=self.norm,
            steps=self.steps,
            step_size=self.alpha * self.eps / self.steps,
            loss="ce",
            rand_init=True,
            clip=ctx.clip,
            generator=ctx.generator,
        )
        logits = model(x)
        clean = ce_sum(logits, y) / x.shape[0]
        adv = ce_sum(model(x_adv), y) / x.shape[0]
        loss = 0.5 * clean + 0.5 * adv
        return StepOutput(loss, logits, {"ce_clean": clean.item(), "ce_adv": adv.item()})
