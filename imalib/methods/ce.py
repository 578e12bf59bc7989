"""ce: cross-entropy on clean data only (the paper's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from imalib.methods.base import (
    BatchContext,
    NoState,
    StatelessMethod,
    StepOutput,
    ce_sum,
)


@dataclass(frozen=True)
class CE(StatelessMethod):
    """Standard training. The optimizer (Adam, or AdamW with weight decay 0.01 as the
    paper's COVID-19 "ce" model) is part of the run configuration, not of the loss."""

    name: str = "ce"

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: NoState, ctx: BatchContext
    ) -> StepOutput:
        logits = model(x)
        loss = ce_sum(logits, y) / x.shape[0]
        return StepOutput(loss, logits, {"ce": loss.item()})
