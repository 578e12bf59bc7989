"""What every training method shares: the per-batch context, the step output and the method's own state.

A method is a frozen dataclass with three calls that :func:`imalib.train.fit`
makes: ``init(n_train, epochs)`` once, giving the method's state (the margin
store of IMA and MMA, nothing for the others); ``batch_loss(model, x, y, idx,
state, ctx)`` per batch; ``end_epoch(model, data, state, ctx)`` after every
epoch. ``fit`` checkpoints the state through its ``state_dict`` and never looks
inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imalib.margins import MarginStore
from imalib.norms import Clip


@dataclass
class BatchContext:
    """What every method's loss may use besides the model, the batch and its own state."""

    clip: Clip
    generator: torch.Generator
    epochs: int
    batch_size: int = 128


@dataclass(frozen=True)
class StepOutput:
    """A method's loss for one batch, the clean logits it computed, and named loss terms."""

    loss: Tensor
    logits: Tensor
    terms: dict[str, float]


class MethodState(Protocol):
    """A method's state across batches and epochs; ``fit`` saves and restores it in the checkpoint."""

    @property
    def margins(self) -> MarginStore | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BatchSource(Protocol):
    """Yields (x, y, idx) batches of the training set in a fixed order."""

    def ordered_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]: ...


class Method(Protocol):
    """A training method is its per-batch loss and its state; :func:`imalib.train.fit` is the one loop."""

    name: str

    def init(self, n_train: int, epochs: int) -> MethodState: ...

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: Any, ctx: BatchContext
    ) -> StepOutput: ...

    def end_epoch(self, model: nn.Module, data: BatchSource, state: Any, ctx: BatchContext) -> None: ...


class NoState:
    """The state of a method that keeps nothing between batches."""

    margins: MarginStore | None = None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"this method keeps no state, but the checkpoint holds {sorted(state)}")


@dataclass
class MarginState:
    """The state of a method that keeps one margin per training sample (MMA; IMA adds its buffer)."""

    margins: MarginStore

    def state_dict(self) -> dict[str, Any]:
        return {"margins": self.margins.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.margins.load_state_dict(state["margins"])

    def start_from(self, values: Tensor) -> None:
        """Start from the margins ``values`` of a finished run (same training set), keeping delta and eps_max."""
        self.margins.load_state_dict({"values": values, "delta": self.margins.delta, "eps_max": self.margins.eps_max})


class StatelessMethod:
    """Mixin for methods that keep no per-sample state: ``init`` gives :class:`NoState`, ``end_epoch`` does nothing."""

    def init(self, n_train: int, epochs: int) -> NoState:
        return NoState()

    def end_epoch(self, model: nn.Module, data: BatchSource, state: NoState, ctx: BatchContext) -> None:
        return None


def ce_sum(logits: Tensor, y: Tensor) -> Tensor:
    """Summed cross-entropy; zero for an empty batch."""
    if y.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, y, reduction="sum")


__all__ = [
    "BatchContext",
    "BatchSource",
    "MarginState",
    "Method",
    "MethodState",
    "NoState",
    "StatelessMethod",
    "StepOutput",
    "ce_sum",
]
