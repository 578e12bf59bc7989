"""The per-sample margin store E of Algorithms 1-2, indexed by dataset index."""

from __future__ import annotations

import torch
from torch import Tensor


class MarginStore:
    """E: one estimated margin per training sample, float32 on the CPU.

    Rows are addressed by the sample's index in the training set (the ``idx``
    that every training loader yields), never by its position in a batch.
    Initialised to ``delta`` (Delta_epsilon), as Algorithm 2's note prescribes.
    """

    def __init__(self, n: int, delta: float, eps_max: float) -> None:
        if n <= 0:
            raise ValueError(f"a margin store needs at least one sample, got n={n}")
        if not 0 < delta <= eps_max:
            raise ValueError(f"need 0 < delta <= eps_max, got delta={delta}, eps_max={eps_max}")
        self.delta = float(delta)
        self.eps_max = float(eps_max)
        self.values = torch.full((n,), self.delta, dtype=torch.float32)

    def __len__(self) -> int:
        return int(self.values.numel())

    def get(self, idx: Tensor) -> Tensor:
        """E(x) for the samples with dataset indices ``idx``."""
        return self.values[idx.cpu()]

    def algorithm2_update(self, idx: Tensor, correct: Tensor, found: Tensor, distance: Tensor) -> None:
        """Algorithm 2, lines 3-14, for the samples ``idx``.

        wrongly classified -> Delta (re-initialise); correct and BPGD found the
        boundary -> ||x - x_n||_p (refine/shrink); correct and not found ->
        E + Delta (expand); then clip into [Delta, eps_max].
        ``found`` and ``distance`` are read only where ``correct`` is True.
        """
        idx, correct, found, distance = idx.cpu(), correct.cpu(), found.cpu(), distance.detach().float().cpu()
        current = self.values[idx]
        new = torch.where(found, distance, current + self.delta)
        new = torch.where(correct, new, torch.full_like(current, self.delta))
        self.values[idx] = new.clamp(self.delta, self.eps_max)

    def set(self, idx: Tensor, values: Tensor) -> None:
        """Overwrite E at ``idx`` (MMA's update: the margin found by its search)."""
        self.values[idx.cpu()] = values.detach().float().cpu()

    def state_dict(self) -> dict[str, object]:
        return {"values": self.values.clone(), "delta": self.delta, "eps_max": self.eps_max}

    def load_state_dict(self, state: dict[str, object]) -> None:
        values = state["values"]
        if not isinstance(values, Tensor) or values.shape != self.values.shape:
            raise ValueError("margin state does not match this training set: was it saved for another dataset size?")
        self.values = values.clone().float()
        self.delta = float(state["delta"])  # type: ignore[arg-type]
        self.eps_max = float(state["eps_max"])  # type: ignore[arg-type]

    def histogram(self, bins: int = 30) -> tuple[Tensor, Tensor]:
        """Counts and bin edges of E over [0, eps_max], for Figure 9-style plots."""
        counts = torch.histc(self.values, bins=bins, min=0.0, max=self.eps_max)
        edges = torch.linspace(0.0, self.eps_max, bins + 1)
        return counts, edges
