"""IMA: Increasing-Margin Adversarial training (Algorithms 1 and 2 of the paper)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from imalib.attacks.bpgd import BoundaryResult, bpgd
from imalib.margins import MarginStore
from imalib.methods.base import (
    BatchContext,
    BatchSource,
    MarginState,
    StepOutput,
    ce_sum,
)
from imalib.norms import Norm

MarginMode = Literal["paper", "fused"]


@dataclass
class IMAState(MarginState):
    """IMA's margin store E, and (fused mode) the BPGD outcomes of the current epoch, applied at its end.

    ``pending`` is empty whenever an epoch has ended, so the checkpoint holds the margins only.
    """

    pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)


@dataclass(frozen=True)
class IMA:
    """Algorithm 1's loss with Algorithm 2's margin update.

    Per batch: split X into wrongly (X_0) and correctly (X_1) classified samples;
    X_n = BPGD(X_1, Y_1, E(X_1)); L = ((1 - beta)(L_0 + L_1) + beta * L_2) / B
    with summed cross-entropies, B the full batch size, and L_2 taken over the
    samples for which BPGD reached the boundary (the others are "None").

    Margin update (Algorithm 2), after every epoch:

    * ``margin_mode="paper"``: a separate pass over the training set in a
      fixed order runs a fresh BPGD on every correctly classified sample;
    * ``margin_mode="fused"``: the BPGD results Algorithm 1 computed during the
      epoch are reused (saves the second pass; the results are up to one
      epoch of model updates older).

    Both apply the same rules: wrong -> Delta, boundary found -> ||x - x_n||_p,
    not found -> E + Delta, then clip into [Delta, eps_max].

    Args:
        eps: eps_max, the largest margin E may take.
        beta: the weight of the noisy-sample loss (paper: 0.5).
        steps, alpha, n_binary: BPGD's N_PGD, alpha, N_binary (paper: 20, 4, 10).
        delta: Delta_epsilon, the margin expansion step; None means eps_max /
            epochs, as the paper suggests.
    """

    eps: float
    norm: Norm = "linf"
    beta: float = 0.5
    steps: int = 20
    alpha: float = 4.0
    n_binary: int = 10
    margin_mode: MarginMode = "paper"
    delta: float | None = None
    name: str = "ima"

    def __post_init__(self) -> None:
        if self.margin_mode not in ("paper", "fused"):
            raise ValueError(f"margin_mode={self.margin_mode!r} is not supported: use 'paper' or 'fused'")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta={self.beta} must lie in [0, 1]")

    def init(self, n_train: int, epochs: int) -> IMAState:
        delta = self.delta if self.delta is not None else self.eps / epochs
        return IMAState(MarginStore(n_train, delta=delta, eps_max=self.eps))

    def _boundary(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, margins: MarginStore, ctx: BatchContext
    ) -> BoundaryResult:
        eps = margins.get(idx).to(device=x.device, dtype=x.dtype)
        return bpgd(
            model,
            x,
            y,
            eps,
            norm=self.norm,
            steps=self.steps,
            alpha=self.alpha,
            n_binary=self.n_binary,
            clip=ctx.clip,
            generator=ctx.generator,
        )

    def batch_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: IMAState, ctx: BatchContext
    ) -> StepOutput:
        logits = model(x)
        correct = logits.detach().argmax(dim=1) == y
        clean = ce_sum(logits, y)  # L_0 + L_1
        noisy = clean * 0.0
        n_found = 0
        found = torch.zeros_like(correct)
        distance = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if bool(correct.any()):
            result = self._boundary(model, x[correct], y[correct], idx[correct], state.margins, ctx)
            rows = correct.nonzero().squeeze(1)
            found[rows] = result.found
            distance[rows] = result.distance
            if bool(result.found.any()):
                noisy = ce_sum(model(result.x_n[result.found]), y[correct][result.found])  # L_2
                n_found = int(result.found.sum())
        if self.margin_mode == "fused":
            state.pending.append((idx.cpu(), correct.cpu(), found.cpu(), distance.detach().cpu()))
        batch = x.shape[0]
        loss = ((1.0 - self.beta) * clean + self.beta * noisy) / batch
        return StepOutput(
            loss, logits, {"L01": clean.item() / batch, "L2": noisy.item() / batch, "found": n_found / batch}
        )

    def end_epoch(self, model: nn.Module, data: BatchSource, state: IMAState, ctx: BatchContext) -> None:
        if self.margin_mode == "fused":
            for idx, correct, found, distance in state.pending:
                state.margins.algorithm2_update(idx, correct, found, distance)
            state.pending.clear()
            return
        # Four training batches at a time: 512 for Moons and the image CNNs (batch 128), 128 for the CT ResNet.
        for x, y, idx in data.ordered_batches(4 * ctx.batch_size):
            with torch.no_grad():
                was = model.training
                model.eval()
                correct = model(x).argmax(dim=1) == y
                model.train(was)
            found = torch.zeros_like(correct)
            distance = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            if bool(correct.any()):
                result = self._boundary(model, x[correct], y[correct], idx[correct], state.margins, ctx)
                found[correct] = result.found
                distance[correct] = result.distance
            state.margins.algorithm2_update(idx, correct, found, distance)
