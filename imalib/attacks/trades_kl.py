"""The inner maximisation of TRADES (Zhang et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.norms import Clip, Norm, ascent_direction, check_norm, clip_box, project_ball


def trades_kl_attack(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    norm: Norm,
    steps: int,
    step_size: float,
    clip: Clip = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Maximise KL(f(x) || f(x_adv)) in the eps-ball, as in TRADES.

    Starts at x + 0.001 * N(0, 1) (TRADES' start, not clamped before the first
    step) and takes ``steps`` ascent steps of size ``step_size`` on the summed
    KL divergence, projecting to the eps-ball and the clip box after each step.
    The label is not used: the attack pushes the prediction away from f(x).
    """
    norm = check_norm(norm)
    x0 = x.detach()
    with frozen_eval(model):
        with torch.no_grad():
            target = F.softmax(model(x0), dim=1)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_adv = x0 + 0.001 * noise
        for _ in range(steps):
            current = x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(current), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(kl, current)
            moved = current.detach() + step_size * ascent_direction(grad, norm)
            x_adv = clip_box(x0 + project_ball(moved - x0, eps, norm), clip)
    return x_adv.detach()
