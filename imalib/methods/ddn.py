"""DDN adversarial training (Rony et al. 2019), used in the paper's L2 tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from imalib.attacks.ddn import ddn
from imalib.methods.base import (
    BatchContext,
    NoState,
    StatelessMethod,
    StepOutput,
    ce_sum,
)
from imalib.norms import project_ball


@dataclass(frozen=True)
class DDN(StatelessMethod):
    """CE on DDN adversarial examples whose perturbation is renormalised to <= eps_max.

    The paper gives no DDN settings. We follow the DDN authors' training recipe
    (adversarial examples only, from the first epoch) with ``steps`` = 20 to
    match the 20-PGD budget of the other methods (their recipe used 100).
    """

    eps: float
    norm: Literal["l2"] = "l2"
    steps: int = 20
    gamma: float = 0.05
    name: str = "ddn"

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: NoState, ctx: BatchContext
    ) -> StepOutput:
        levels = 256 if ctx.clip is not None else None
        x_ddn = ddn(
            model,
            x,
            y,
            steps=self.steps,
            gamma=self.gamma,
            quantize_levels=levels,
            clip=ctx.clip,
            generator=ctx.generator,
        )
        x_adv = x + project_ball(x_ddn - x, self.eps, self.norm)
        with torch.no_grad():
            logits = model(x)
        loss = ce_sum(model(x_adv), y) / x.shape[0]
        return StepOutput(loss, logits, {"ce_adv": loss.item()})
