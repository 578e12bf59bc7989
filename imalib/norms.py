"""Per-sample vector norms, projections and random starts.

Every function here treats dimension 0 as the batch and measures a sample's
perturbation ``delta`` as one flat vector over all other dimensions, so the same
code serves 2-D Moons points and C x H x W images.  ``eps`` (the paper's
noise level epsilon) is either a float or a tensor of shape ``(B,)``: IMA gives
every sample its own radius, the estimated margin E(x).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2"]
Eps = float | Tensor
Clip = tuple[float, float] | None

NORMS: tuple[str, ...] = ("linf", "l2")


def check_norm(norm: str) -> Norm:
    """Return ``norm`` if it is one of :data:`NORMS`, else raise a ValueError naming the choices."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported: use one of {', '.join(NORMS)}")
    return norm  # type: ignore[return-value]


def as_column(value: Eps, x: Tensor) -> Tensor:
    """Broadcast a float or a ``(B,)`` tensor to shape ``(B, 1, ..., 1)`` matching ``x``."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value.to(x).expand(x.shape[0]).reshape(shape)
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"per-sample eps has shape {tuple(value.shape)}; expected ({x.shape[0]},), one value per sample"
            )
        return value.to(x).reshape(shape)
    return torch.full(shape, float(value), dtype=x.dtype, device=x.device)


def lp_norm(delta: Tensor, norm: Norm) -> Tensor:
    """Per-sample ||delta||_p over all non-batch dimensions; shape ``(B,)``."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def project_ball(delta: Tensor, eps: Eps, norm: Norm) -> Tensor:
    """Project each row of ``delta`` onto its eps-ball (||delta||_p <= eps)."""
    radius = as_column(eps, delta)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    length = as_column(lp_norm(delta, "l2"), delta)
    scale = torch.where(length > radius, radius / length.clamp_min(1e-12), torch.ones_like(length))
    return delta * scale


def clip_box(x: Tensor, clip: Clip) -> Tensor:
    """Clamp ``x`` into the feasible input box; ``clip=None`` leaves it unbounded (Moons)."""
    if clip is None:
        return x
    return x.clamp(clip[0], clip[1])


def ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    """The paper's h(J'): sign(J') for L-inf, J'/||J'||_2 per sample for L2 (eq. 1)."""
    if norm == "linf":
        return grad.sign()
    length = as_column(lp_norm(grad, "l2"), grad)
    return grad / length.clamp_min(1e-12)


def random_in_ball(x: Tensor, eps: Eps, norm: Norm, generator: torch.Generator | None = None) -> Tensor:
    """Random start xi with ||xi||_p <= eps, uniform over the ball.

    L-inf: each coordinate uniform in [-eps, eps].  L2: a Gaussian direction
    scaled by eps * U^(1/d), which is uniform over the d-dimensional L2 ball
    and works without an input box.  This is not advertorch's L2 start (the
    paper's evaluator and MMA's PGD): advertorch draws U(clip_min, clip_max) - x
    and clamps it to the eps-sphere, which on images leans towards brightening
    dark pixels. So the L2 tables (Fashion-MNIST Table 3, SVHN Table 5) and L2
    training start PGD from another distribution than the paper's code; the
    cross-check against advertorch (tests/test_advertorch_crosscheck.py) covers
    L-inf on Moons only.
    """
    radius = as_column(eps, x)
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (2.0 * u - 1.0) * radius
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    direction = direction / as_column(lp_norm(direction, "l2"), x).clamp_min(1e-12)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device)
    return direction * radius * as_column(u.pow(1.0 / d), x)
