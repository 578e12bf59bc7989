"""BPGD (Algorithm 3): PGD followed by a binary search onto the decision boundary."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.losses import attack_loss
from imalib.norms import (
    Clip,
    Eps,
    Norm,
    as_column,
    ascent_direction,
    check_norm,
    clip_box,
    lp_norm,
    project_ball,
    random_in_ball,
)

COMPACT_SHARE = 0.25  # drop crossed samples from the working batch once they are this share of it (at most 1)


@dataclass(frozen=True)
class BoundaryResult:
    """What BPGD returns for a batch.

    Attributes:
        x_n: the noisy samples. Where ``found`` is True, the midpoint of the final
            bisection bracket, within one bisection interval of the boundary;
            elsewhere the last PGD iterate (the paper's "None", case-0 of Fig. 2).
        found: (B,) bool, True for case-1: some PGD iterate was misclassified.
        distance: (B,) ||x_n - x||_p, the margin estimate used by Algorithm 2.
    """

    x_n: Tensor
    found: Tensor
    distance: Tensor


def _per_row(mask: Tensor, x: Tensor) -> Tensor:
    """A (B,) bool mask as shape (B, 1, ..., 1), to select whole rows of ``x`` with ``torch.where``."""
    return mask.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


@torch.no_grad()
def bisect_boundary(model: nn.Module, x_in: Tensor, x_out: Tensor, y: Tensor, n_binary: int) -> tuple[Tensor, Tensor]:
    """Binary search on the segment [x_in, x_out] (Fig. 3).

    ``x_in`` is classified as ``y`` and ``x_out`` is not. Each of the ``n_binary``
    steps classifies the midpoint m and keeps the half-segment whose ends
    disagree. Returns the final bracket (inside point, outside point).
    """
    inside, outside = x_in.clone(), x_out.clone()
    for _ in range(n_binary):
        middle = (inside + outside) / 2
        mask = _per_row(model(middle).argmax(dim=1) == y, middle)
        inside = torch.where(mask, middle, inside)
        outside = torch.where(mask, outside, middle)
    return inside, outside


def bpgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Eps,
    *,
    norm: Norm,
    steps: int = 20,
    alpha: float = 4.0,
    n_binary: int = 10,
    loss: str = "ce",
    rand_init: bool = True,
    clip: Clip = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> BoundaryResult:
    """Algorithm 3 (BPGD) in batch form: find noisy samples on the decision boundary.

    Runs PGD(x, y, eps) with step size eta = alpha * eps / N_PGD per sample,
    classifying every iterate x_(0..N_PGD) (x_(0) is the random start). For a
    sample whose iterates ever leave class ``y`` (case-1), x_n1 is the last
    correctly classified iterate before the first wrong one x_n2 (x itself if
    the random start is already wrong), and ``n_binary`` bisection steps on
    [x_n1, x_n2] put x_n on the boundary. A sample's iterations stop at its
    first wrong iterate: later iterates cannot change x_n1 or x_n2.

    Args:
        model: the classifier f; attacked in eval mode, mode restored afterwards.
        x: correctly classified samples (B, ...) (X_1 of Algorithm 1).
        y: their labels (B,).
        eps: the estimated margins E(x), a float or a (B,) tensor.
        norm: "linf" or "l2".
        steps: N_PGD (paper: 20).
        alpha: sweeps of the eps-ball; eta = alpha * eps / N_PGD (paper: 4).
        n_binary: N_binary, bisection steps (paper: 10).
        loss: PGD objective J ("ce" in the paper).
        rand_init: random start uniform in the eps-ball (the authors' code uses one).
        clip: input box, or None for unbounded data.
        generator: source of the random start.
    """
    norm = check_norm(norm)
    objective = attack_loss(loss)
    x0 = x.detach()
    radius = as_column(eps, x0)
    eta = alpha * radius / steps
    start = clip_box(x0 + random_in_ball(x0, radius.flatten(), norm, generator), clip) if rand_init else x0.clone()
    found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    last_correct = torch.empty_like(x0)  # x_n1 (x itself where the start is already wrong), written for found rows
    first_wrong = torch.empty_like(x0)  # x_n2, written for found rows
    x_n = start.clone()
    # The loop works on compact tensors of the samples still being attacked. Each step only classifies its
    # iterate and keeps it (``seen``, with its ``wrong`` mask); a sample that crosses keeps being stepped until
    # at least ``COMPACT_SHARE`` of the working batch has crossed (removing rows costs a dozen indexing
    # operations, which for a small model cost more than carrying the crossed rows along). Then the crossed
    # samples leave with (x_n1, x_n2) read off the kept iterates at their first wrong one, and the iterates
    # are dropped: the samples that stay have not crossed yet, so only their current iterate can matter. The kept
    # iterates are at most N_PGD + 2 copies of the batch (the COVID-19 batch of 32 at 224x224: about 140 MB).
    rows = torch.arange(x0.shape[0], device=x0.device)
    current, origin, labels, r, step = start, x0, y, radius, eta
    seen = [x0]  # the iterates since the last compaction, after the one before them (x itself before the start)
    wrong: list[Tensor] = []  # per kept iterate after the first: misclassified?
    crossed = torch.zeros_like(found)
    with frozen_eval(model):
        for k in range(steps + 1):
            take_step = k < steps
            current = current.detach().requires_grad_(take_step)
            logits = model(current)
            if take_step:
                (grad,) = torch.autograd.grad(objective(logits, labels).sum(), current)
            current = current.detach()
            seen.append(current)
            wrong.append(logits.detach().argmax(dim=1) != labels)
            crossed = crossed | wrong[-1]
            n_crossed = int(crossed.sum())
            if n_crossed and (not take_step or n_crossed >= COMPACT_SHARE * rows.numel()):
                leaving = crossed.nonzero().squeeze(1)
                first = torch.stack(wrong)[:, leaving].int().argmax(dim=0)  # the first wrong iterate (index of max)
                kept = torch.stack(seen)
                found[rows[leaving]] = True
                last_correct[rows[leaving]] = kept[first, leaving]
                first_wrong[rows[leaving]] = kept[first + 1, leaving]
                still = ~crossed
                rows, current, origin, labels, r, step = (t[still] for t in (rows, current, origin, labels, r, step))
                if take_step:
                    grad = grad[still]
                crossed = crossed[still]
                seen, wrong = [current], []
            if not take_step or rows.numel() == 0:
                break
            moved = current + step * ascent_direction(grad, norm)
            current = clip_box(origin + project_ball(moved - origin, r.flatten(), norm), clip)
        x_n[rows] = current
        if bool(found.any()):
            hits = found.nonzero().squeeze(1)
            inside, outside = bisect_boundary(model, last_correct[hits], first_wrong[hits], y[hits], n_binary)
            x_n[hits] = (inside + outside) / 2
    return BoundaryResult(x_n=x_n.detach(), found=found, distance=lp_norm(x_n - x0, norm))
