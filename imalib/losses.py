"""Per-sample classification losses used by the attacks and the training methods.

All return one value per sample (shape ``(B,)``); callers sum them, never average,
so that an attack on a batch treats each row exactly as it would treat it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

AttackLoss = Literal["ce", "margin", "slm"]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy L_ce(x, y)."""
    return F.cross_entropy(logits, y, reduction="none")


def _other_logits(logits: Tensor, y: Tensor) -> Tensor:
    """Logits with the true class pushed to -inf, so max/logsumexp run over j != y."""
    mask = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf"))


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j - z_y, unclamped (advertorch's ``MarginalLoss``).

    Positive exactly when the sample is misclassified; the paper's evaluation
    maximises it as the second of its two 100-step PGD attacks.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return _other_logits(logits, y).amax(dim=1) - z_y


def soft_margin(logits: Tensor, y: Tensor) -> Tensor:
    """logsumexp_{j != y} z_j - z_y: the 'slm' loss MMA uses for its attack and search.

    With two classes it equals :func:`margin`; with more it is an upper bound,
    so ``soft_margin < 0`` is a stricter test of correctness than argmax.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return torch.logsumexp(_other_logits(logits, y), dim=1) - z_y


ATTACK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ce": cross_entropy,
    "margin": margin,
    "slm": soft_margin,
}


def attack_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Look up a per-sample attack objective J by name."""
    if name not in ATTACK_LOSSES:
        raise ValueError(f"loss={name!r} is not supported: use one of {', '.join(ATTACK_LOSSES)}")
    return ATTACK_LOSSES[name]
