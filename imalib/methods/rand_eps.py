"""rand-eps: clean data plus uniform white noise (the paper's "rand eps" models)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from imalib.methods.base import (
    BatchContext,
    NoState,
    StatelessMethod,
    StepOutput,
    ce_sum,
)
from imalib.norms import clip_box


@dataclass(frozen=True)
class RandEps(StatelessMethod):
    """Train on x and on x + u, u uniform in [-eps, eps] per input element.

    The paper names this model ("rand eps", a weak analogue of "adv eps") but
    gives no loss; we assume eq. (2)'s form: 1/2 clean CE + 1/2 noisy CE.
    """

    eps: float
    name: str = "rand"

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: NoState, ctx: BatchContext
    ) -> StepOutput:
        u = torch.rand(x.shape, generator=ctx.generator, dtype=x.dtype, device=x.device)
        x_noisy = clip_box(x + (2.0 * u - 1.0) * self.eps, ctx.clip)
        logits = model(x)
        clean = ce_sum(logits, y) / x.shape[0]
        noisy = ce_sum(model(x_noisy), y) / x.shape[0]
        loss = 0.5 * clean + 0.5 * noisy
        return StepOutput(loss, logits, {"ce_clean": clean.item(), "ce_noisy": noisy.item()})
