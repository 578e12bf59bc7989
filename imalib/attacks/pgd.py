"""Projected gradient descent (PGD), eq. (1) of the paper."""

from __future__ import annotations

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
    project_ball,
    random_in_ball,
)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Eps,
    *,
    norm: Norm = "linf",
    steps: int,
    step_size: Eps,
    loss: str = "ce",
    rand_init: bool = True,
    clip: Clip = (0.0, 1.0),
    generator: torch.Generator | None = None,
    stop_on_success: bool = False,
    delta_init: Tensor | None = None,
) -> Tensor:
    """Untargeted PGD inside the eps-ball; x_adv only (:func:`pgd_tracked` documents the arguments)."""
    return pgd_tracked(
        model,
        x,
        y,
        eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        loss=loss,
        rand_init=rand_init,
        clip=clip,
        generator=generator,
        stop_on_success=stop_on_success,
        delta_init=delta_init,
    )[0]


def pgd_tracked(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Eps,
    *,
    norm: Norm = "linf",
    steps: int,
    step_size: Eps,
    loss: str = "ce",
    rand_init: bool = True,
    clip: Clip = (0.0, 1.0),
    generator: torch.Generator | None = None,
    stop_on_success: bool = False,
    delta_init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Untargeted PGD inside the eps-ball: x_(i) = clip(x_(i-1) + eta * h(J'(x_(i-1)))).

    Madry et al. 2017; paper eq. (1).  Threat model: ||x_adv - x||_p <= eps with
    p = inf (h = sign) or p = 2 (h = gradient over its L2 norm), per sample over
    all non-batch dimensions.

    Args:
        model: maps ``x`` of shape (B, ...) to logits (B, C). Run in eval mode
            during the attack; its mode and ``requires_grad`` flags are restored.
        x: clean inputs; images in [0, 1]. Not modified.
        y: true labels (B,).
        eps: noise level epsilon, a float or a per-sample tensor (B,).
        norm: "linf" or "l2".
        steps: N_PGD, the number of gradient steps.
        step_size: eta, a float or a per-sample tensor (B,); the paper uses
            alpha * eps / N_PGD (training, alpha = 4) and eps / 10 (evaluation).
        loss: the objective J maximised: "ce" (cross-entropy), "margin"
            (max_{j != y} z_j - z_y, advertorch's MarginalLoss) or "slm".
        rand_init: start at x + xi with xi uniform in the eps-ball.
        clip: the input box (lo, hi), or None for unbounded data such as Moons.
        generator: the source of the random start, for reproducible attacks.
        stop_on_success: freeze a sample at the first iterate the model
            misclassifies. Never weaker than plain PGD for measuring robust
            accuracy, and cheaper: broken samples drop out of the batch.
        delta_init: an explicit random start xi (inside the eps-ball), used
            instead of drawing one; lets a caller stack attacks whose starts
            were drawn separately.

    Returns:
        x_adv with the shape of ``x``, inside the eps-ball and the clip box, and
        ``seen`` (B,): True where the attack's own forward pass classified an
        iterate wrongly (always False unless ``stop_on_success``). A caller
        counts those samples as broken without judging x_adv again, since
        another forward pass (another batch, TF32 or another kernel on a GPU)
        may put an iterate that sits just past the boundary back on the right
        side.
    """
    norm = check_norm(norm)
    objective = attack_loss(loss)
    x0 = x.detach()
    radius = as_column(eps, x0)
    eta = as_column(step_size, x0)
    if delta_init is not None:
        x_adv = clip_box(x0 + delta_init.detach(), clip)
    elif rand_init:
        x_adv = clip_box(x0 + random_in_ball(x0, radius.flatten(), norm, generator), clip)
    else:
        x_adv = x0.clone()
    # The loop works on compact tensors of the samples still being attacked; a sample leaves
    # (its x_adv written back) only when stop_on_success sees it misclassified.
    rows = torch.arange(x0.shape[0], device=x0.device)
    seen = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    current, start, labels, r, step = x_adv.clone(), x0, y, radius, eta
    with frozen_eval(model):
        for _ in range(steps):
            if rows.numel() == 0:
                break
            current = current.detach().requires_grad_(True)
            logits = model(current)
            (grad,) = torch.autograd.grad(objective(logits, labels).sum(), current)
            current = current.detach()
            if stop_on_success:
                still = logits.detach().argmax(dim=1) == labels
                if not bool(still.all()):
                    x_adv[rows[~still]] = current[~still]
                    seen[rows[~still]] = True
                    rows, current, grad, start, labels, r, step = (
                        t[still] for t in (rows, current, grad, start, labels, r, step)
                    )
            moved = current + step * ascent_direction(grad, norm)
            current = clip_box(start + project_ball(moved - start, r.flatten(), norm), clip)
        x_adv[rows] = current.detach()
    return x_adv.detach(), seen
