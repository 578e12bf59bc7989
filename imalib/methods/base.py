"""What every training method shares: the per-batch context and the step output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imalib.margins import MarginStore
from imalib.norms import Clip


@dataclass
class BatchContext:
    """Everything a method's loss may need besides the model and the batch."""

    clip: Clip
    generator: torch.Generator
    epochs: int
    margins: MarginStore | None = None
    batch_size: int = 128
    pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)


@dataclass(frozen=True)
class StepOutput:
    """A method's loss for one batch, the clean logits it computed, and named loss terms."""

    loss: Tensor
    logits: Tensor
    terms: dict[str, float]


class Method(Protocol):
    """A training method is its per-batch loss; :func:`imalib.train.fit` is the one loop."""

    name: str

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, ctx: BatchContext) -> StepOutput: ...

    def make_margins(self, n: int, epochs: int) -> MarginStore | None: ...

    def end_epoch(self, model: nn.Module, batches: "BatchSource", ctx: BatchContext) -> None: ...


class BatchSource(Protocol):
    """Yields (x, y, idx) batches of the training set in a fixed order."""

    def ordered_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]: ...


def ce_sum(logits: Tensor, y: Tensor) -> Tensor:
    """Summed cross-entropy; zero for an empty batch."""
    if y.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, y, reduction="sum")


class NoMargins:
    """Mixin for methods that keep no per-sample state."""

    def make_margins(self, n: int, epochs: int) -> MarginStore | None:
        return None

    def end_epoch(self, model: nn.Module, batches: BatchSource, ctx: BatchContext) -> None:
        return None
