"""Decoupled Direction and Norm (DDN) L2 attack (Rony et al. 2019)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.norms import Clip, as_column, clip_box, lp_norm


def ddn(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 100,
    gamma: float = 0.05,
    init_norm: float = 1.0,
    quantize_levels: int | None = 256,
    clip: Clip = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Smallest-L2 adversarial example found by DDN; x itself where none was found.

    Each step moves delta along the normalised cross-entropy gradient with a
    cosine-decayed step (1 to 0.01), then rescales delta to a norm rho that
    shrinks by (1 - gamma) while the sample is adversarial and grows by
    (1 + gamma) while it is not. The best (smallest) adversarial delta seen is
    returned, as in the reference implementations. Three details differ from
    them: rho is not capped at the norm of the best adversarial delta found
    (fast_adversarial caps it; advertorch does not), the best norm starts at
    infinity rather than at a worst-case norm, and the final iterate is checked
    too, which can only make the attack stronger. Measured against advertorch's
    DDNL2Attack on the Fashion-MNIST CNN (64 images), both succeed on every
    image, with median L2 norms within 5 % at 20 steps and 0.4 % at 100.

    Args:
        quantize_levels: round x + delta to this many grey levels (8-bit images:
            256); None for continuous data.
        generator: used only to replace an all-zero gradient by a random direction.
    """
    x0 = x.detach()
    delta = torch.zeros_like(x0)
    rho = torch.full((x0.shape[0],), init_norm, dtype=x0.dtype, device=x0.device)
    best_norm = torch.full_like(rho, math.inf)
    best_delta = torch.zeros_like(x0)
    with frozen_eval(model):
        for i in range(steps):
            lr = 0.01 + (1.0 - 0.01) * (1 + math.cos(math.pi * i / steps)) / 2
            current = delta.requires_grad_(True)
            logits = model(x0 + current)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), current)
            delta = current.detach()
            is_adv = logits.detach().argmax(dim=1) != y
            size = lp_norm(delta, "l2")
            better = is_adv & (size < best_norm)
            best_norm = torch.where(better, size, best_norm)
            best_delta[better] = delta[better]
            grad_norm = lp_norm(grad, "l2")
            zero = grad_norm < 1e-12
            if bool(zero.any()):
                grad[zero] = torch.randn(grad[zero].shape, generator=generator, dtype=grad.dtype, device=grad.device)
                grad_norm = lp_norm(grad, "l2")
            delta = delta + lr * grad / as_column(grad_norm.clamp_min(1e-12), grad)
            rho = rho * torch.where(is_adv, 1.0 - gamma, 1.0 + gamma)
            delta = delta * as_column(rho / lp_norm(delta, "l2").clamp_min(1e-12), delta)
            candidate = x0 + delta
            if quantize_levels is not None:
                candidate = torch.round(candidate * (quantize_levels - 1)) / (quantize_levels - 1)
            delta = clip_box(candidate, clip) - x0
        with torch.no_grad():
            is_adv = model(x0 + delta).argmax(dim=1) != y
        size = lp_norm(delta, "l2")
        better = is_adv & (size < best_norm)
        best_delta[better] = delta[better]
    return (x0 + best_delta).detach()
