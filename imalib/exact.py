"""Exact L-inf robustness for 2-D inputs (Moons): a certified quadtree instead of PGD.

The paper measures robust accuracy with 100-step PGD, which can only find
adversarial examples, so its numbers are upper bounds.  When the input x is a
point in the plane, the L-inf ball of radius eps is the square
``[x - eps, x + eps]^2`` and can simply be searched.  This module does that
with a quadtree over the largest square of every test point:

* **Witnesses (exact "not robust").**  Every cell of the quadtree has its centre
  evaluated by the model.  A misclassified centre ``p`` is a real adversarial
  example: the model (in float32, exactly as it is used) predicts a class other
  than y at ``p``, and ``|p - x|_inf`` is measured on the float32 point that was
  fed to the model.  A sample is reported non-robust at eps only when it has
  such a witness with ``|p - x|_inf <= eps`` (up to :data:`OFFSET_ATOL` of float
  rounding), so "not robust" is never an approximation.

* **Certificates (sound "robust").**  A cell is removed from the search when it
  is proved that the model predicts y everywhere in the closed cell.  For an
  ``nn.Sequential`` of Linear / ReLU / LeakyReLU / LayerNorm (/ Identity /
  Dropout / Flatten) layers, such as :func:`imalib.models.moons_mlp`, the proof
  is interval bound propagation (IBP) in float64: a lower bound on the margin
  ``z_y - z_j`` over the whole cell for every j != y, which must exceed
  :data:`CERTIFY_ATOL`.  Interval bounds shrink linearly with the cell, so a
  cell whose margin is not close to 0 is certified after a few refinements.
  A cell that is neither certified nor holds a witness is split into four
  children, down to the finest spacing ``h`` (at most ``resolution``).

* **What is left.**  Finest cells that are neither certified nor hold a witness
  are *undecided*.  They are counted as robust in ``robust`` (no adversarial
  point was found there) and flagged in ``certified``; in IBP mode an
  undecided cell is never silently claimed robust.

Guarantee (IBP mode).  With finest spacing ``h = 2R / 2**L <= resolution`` (R
the largest eps, or ``max_radius``), the finest cell centres form a lattice of
spacing h, and every closed axis-aligned square of side h inside ``[x - R,
x + R]^2`` contains one.  Hence a misclassified region inside an eps-square
that contains a closed axis-aligned square of side h is always found (the
sample is reported non-robust with a witness).  The thinnest misclassified
sliver that can escape is one containing no such square (its inscribed L-inf
radius is below h / 2); it can then only hide in undecided cells, so the
sample's verdict for that eps is reported as not certified.  The default
``resolution`` :data:`DEFAULT_RESOLUTION` = 1e-3 gives h = 0.6 / 1024 ~ 5.9e-4
for Moons' largest noise level 0.3.

Fallback (``certify="gradient"``, used automatically for models IBP does not
understand).  Cells are discarded when ``margin(centre) - SAFETY * ||grad||_1 *
h_cell / 2 > 0``, a first-order Lipschitz estimate: exact for a linear model
but *not* a proof for a curved one; a misclassified pocket where the gradient
at the centres is flat can then be missed even if it is wider than h.  The
witnesses are still exact, so the fallback can only over-state robustness.

Distances.  :func:`linf_distance_bounds` runs the same search with every
radius relevant and returns, per sample, ``lower <= d(x) <= upper``, where
``d(x) = inf{ |p - x|_inf : model misclassifies p }`` (0 for a misclassified
x), the paper's margin of x measured in L-inf.  ``upper`` is the offset of the
nearest witness found; ``lower`` is the smallest offset of any undecided cell.
If the misclassified set contains a closed square of side h whose farthest
point from x is at offset D, then ``upper <= D`` (for a boundary that is
locally straight near the closest point, ``upper <= d(x) + h``).

Float conventions: offsets are float64; the model sees float32 points
``x + offset``; IBP boxes are float64 boxes around them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.evaluate import RobustnessResult

Certify = Literal["auto", "ibp", "gradient"]

DEFAULT_RESOLUTION: float = 1e-3
"""Default upper bound on the finest quadtree spacing h (input units).

A misclassified region inside an eps-square is guaranteed to be found when it
contains a closed axis-aligned square of side h; the thinnest sliver that can
be missed has inscribed L-inf radius below h / 2 (and in IBP mode it leaves
the verdict flagged as not certified rather than wrongly certified)."""

CERTIFY_ATOL: float = 1e-4
"""A cell is certified only when the IBP lower bound on every z_y - z_j exceeds
this, leaving room for the float32 rounding of the model's own forward pass."""

OFFSET_ATOL: float = 1e-6
"""Slack when comparing a witness's measured float32 offset with eps: the
float32 point x + delta may round a hair outside a boundary that lies exactly on
the grid (a witness is never more than this outside the closed eps-square)."""

GRADIENT_SAFETY: float = 2.0
"""Safety factor of the first-order (non-proof) fallback test."""

CHUNK: int = 1 << 16
"""Cells per forward pass."""

_IBP_LAYERS = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.LayerNorm, nn.Identity, nn.Dropout, nn.Flatten)


@dataclass(frozen=True)
class ExactResult(RobustnessResult):
    """Exact per-sample L-inf robustness of 2-D inputs; the fields of RobustnessResult plus the evidence.

    ``robust[k, i]`` is True when no misclassified point was found in the closed
    square ``[x_i - eps_k, x_i + eps_k]^2`` (eps 0: x_i itself is classified y_i).
    ``certified[k, i]`` is True when that verdict is proved: a witness for
    non-robust, the certificate of every relevant cell for robust.
    ``witness[i]`` is the misclassified point nearest to x_i in L-inf that the
    search kept (NaN when none within the largest eps), at offset
    ``witness_offset[i]`` (inf when none); sample i is non-robust exactly at the
    eps >= witness_offset[i] - OFFSET_ATOL.  ``spacing`` is the finest cell side
    h and ``method`` the certificate used ("ibp" or "gradient").
    """

    certified: Tensor
    witness: Tensor
    witness_offset: Tensor
    spacing: float
    method: str

    @property
    def undecided(self) -> list[int]:
        """Per eps, the number of samples whose verdict is not proved (0 everywhere means exact)."""
        return [int(v) for v in (~self.certified).sum(dim=1)]


@dataclass(frozen=True)
class DistanceBounds:
    """Per-sample bounds on the L-inf distance d(x) to the nearest misclassified point, capped at max_radius.

    ``lower <= min(d(x), max_radius) <= upper``; ``witness`` is the point at
    offset ``upper`` (NaN when none was found within ``max_radius``, and then
    ``upper == max_radius``).  ``lower`` is proved only for method "ibp".
    """

    lower: Tensor
    upper: Tensor
    witness: Tensor
    spacing: float
    method: str
    seconds: float


# ----------------------------------------------------------------------------------------------
# Interval bound propagation


def ibp_layers(model: nn.Module) -> list[nn.Module] | None:
    """The model as a flat list of layers IBP supports, or None if it is not such a Sequential."""
    if isinstance(model, nn.Sequential):
        layers: list[nn.Module] = []
        for child in model:
            inner = ibp_layers(child) if isinstance(child, nn.Sequential) else [child]
            if inner is None:
                return None
            layers.extend(inner)
        return layers
    return None


def _supported(layers: list[nn.Module] | None) -> bool:
    if not layers or not isinstance(layers[-1], nn.Linear):
        return False
    for layer in layers:
        if not isinstance(layer, _IBP_LAYERS):
            return False
        if isinstance(layer, nn.LayerNorm) and len(layer.normalized_shape) != 1:
            return False
    return True


def _layer_norm_interval(layer: nn.LayerNorm, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Sound interval image of LayerNorm over the last dimension (float64)."""
    n = lo.shape[-1]
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    # u = x - mean(x) is affine: |A| has 1 - 1/n on the diagonal and 1/n elsewhere.
    u_c = centre - centre.mean(dim=-1, keepdim=True)
    u_r = radius * (1.0 - 2.0 / n) + radius.sum(dim=-1, keepdim=True) / n
    u_lo, u_hi = u_c - u_r, u_c + u_r
    sq_hi = torch.maximum(u_lo.square(), u_hi.square())
    sq_lo = torch.where((u_lo > 0) | (u_hi < 0), torch.minimum(u_lo.square(), u_hi.square()),
                        torch.zeros_like(u_lo))
    var_lo, var_hi = sq_lo.mean(dim=-1, keepdim=True), sq_hi.mean(dim=-1, keepdim=True)
    inv_lo = (var_hi + layer.eps).rsqrt()
    inv_hi = (var_lo + layer.eps).rsqrt()
    # u * inv with inv > 0.
    y_lo = torch.minimum(u_lo * inv_lo, u_lo * inv_hi)
    y_hi = torch.maximum(u_hi * inv_lo, u_hi * inv_hi)
    if layer.weight is not None:
        w = layer.weight.double()
        c, r = (y_hi + y_lo) / 2 * w, (y_hi - y_lo) / 2 * w.abs()
        if layer.bias is not None:
            c = c + layer.bias.double()
        y_lo, y_hi = c - r, c + r
    elif layer.bias is not None:
        b = layer.bias.double()
        y_lo, y_hi = y_lo + b, y_hi + b
    return y_lo, y_hi


def ibp_margin_lower(layers: list[nn.Module], lo: Tensor, hi: Tensor, y: Tensor) -> Tensor:
    """A sound lower bound on min_{j != y} (z_y - z_j) over each input box [lo, hi] (float64, shape (n,)).

    ``layers`` must satisfy the IBP support check (last layer Linear).  The last
    layer is folded into the differences W_y - W_j, which is tighter than
    subtracting the bounds of z_y and z_j.
    """
    lo, hi = lo.double(), hi.double()
    for layer in layers[:-1]:
        if isinstance(layer, nn.Linear):
            w = layer.weight.double()
            c, r = (hi + lo) / 2 @ w.T, (hi - lo) / 2 @ w.abs().T
            if layer.bias is not None:
                c = c + layer.bias.double()
            lo, hi = c - r, c + r
        elif isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            lo, hi = layer(lo), layer(hi)  # monotone non-decreasing
        elif isinstance(layer, nn.LayerNorm):
            lo, hi = _layer_norm_interval(layer, lo, hi)
        # Identity, Dropout (eval), Flatten on (n, d): nothing to do.
    last = layers[-1]
    assert isinstance(last, nn.Linear)
    w = last.weight.double()
    b = last.bias.double() if last.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    out = torch.full((lo.shape[0],), float("inf"), dtype=torch.float64)
    classes = w.shape[0]
    for label in range(classes):
        rows = (y == label).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        others = [j for j in range(classes) if j != label]
        diff_w = w[label][None, :] - w[others]  # (C - 1, d)
        diff_b = b[label] - b[others]
        bound = centre[rows] @ diff_w.T - radius[rows] @ diff_w.abs().T + diff_b
        out[rows] = bound.amin(dim=1)
    return out


# ----------------------------------------------------------------------------------------------
# The quadtree search


@dataclass
class _Search:
    upper: Tensor  # (N,) float64: offset of the nearest witness (inf if none)
    witness: Tensor  # (N, 2) float32, NaN if none
    undecided_from: Tensor  # (N,) float64: smallest offset of an undecided finest cell (inf if none)
    spacing: float
    method: str


def _margins(logits: Tensor, y: Tensor) -> Tensor:
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return z_y - others.amax(dim=1)


def _levels(radius: float, resolution: float) -> int:
    return max(0, math.ceil(math.log2(2.0 * radius / resolution) - 1e-12))


def _check_inputs(x: Tensor, y: Tensor, resolution: float) -> None:
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x has shape {tuple(x.shape)}; exact search needs 2-D points of shape (N, 2)")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y has shape {tuple(y.shape)}; expected ({x.shape[0]},)")
    if not resolution > 0:
        raise ValueError(f"resolution={resolution} must be positive")


def _resolve_method(model: nn.Module, certify: Certify) -> tuple[str, list[nn.Module] | None]:
    layers = ibp_layers(model)
    ok = _supported(layers)
    if certify == "ibp" and not ok:
        raise ValueError("certify='ibp' needs an nn.Sequential of Linear/ReLU/LeakyReLU/LayerNorm layers "
                         "ending in Linear; use certify='gradient' or 'auto'")
    if certify not in ("auto", "ibp", "gradient"):
        raise ValueError(f"certify={certify!r} is not supported: use auto, ibp or gradient")
    if certify == "gradient" or not ok:
        return "gradient", None
    return "ibp", layers


def _search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    radius: float,
    resolution: float,
    relevant: Callable[[Tensor, Tensor], Tensor],
    certify: Certify,
) -> _Search:
    """Quadtree over [x - radius, x + radius]^2 per sample.

    ``relevant(o_min, upper_of_cell)`` says whether a cell whose closest point
    is at L-inf offset ``o_min`` can still change an answer, given the cell's
    sample's current nearest-witness offset.
    """
    method, layers = _resolve_method(model, certify)
    device = x.device
    x32 = x.detach().float()
    x64 = x32.double()
    y = y.to(device)
    n = x.shape[0]
    upper = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    witness = torch.full((n, 2), float("nan"), dtype=torch.float32, device=device)
    undecided_from = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    levels = _levels(radius, resolution) if radius > 0 else 0
    spacing = 2.0 * radius / 2**levels

    pid = torch.arange(n, device=device)
    centre = torch.zeros((n, 2), dtype=torch.float64, device=device)
    quarter = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64,
                           device=device)
    with frozen_eval(model):
        for level in range(levels + 1):
            side = 2.0 * radius / 2**level
            half = side / 2
            # 1. Evaluate the centres: every misclassified one is an exact witness.
            points = (x64[pid] + centre).float()
            wrong_parts, margin_parts, slope_parts = [], [], []
            for s in range(0, pid.numel(), CHUNK):
                p = points[s:s + CHUNK]
                labels = y[pid[s:s + CHUNK]]
                if method == "gradient":
                    with torch.enable_grad():
                        p = p.clone().requires_grad_(True)
                        logits = model(p)
                        m = _margins(logits, labels)
                        (grad,) = torch.autograd.grad(m.sum(), p)
                    slope_parts.append(grad.abs().sum(dim=1).double())
                    logits, m = logits.detach(), m.detach()
                else:
                    with torch.no_grad():
                        logits = model(p)
                        m = _margins(logits, labels)
                wrong_parts.append(logits.argmax(dim=1) != labels)
                margin_parts.append(m.double())
            wrong = torch.cat(wrong_parts) if wrong_parts else torch.zeros(0, dtype=torch.bool, device=device)
            offset = (points.double() - x64[pid]).abs().amax(dim=1)
            if bool(wrong.any()):
                cand = torch.where(wrong, offset, torch.full_like(offset, float("inf")))
                best = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
                best.scatter_reduce_(0, pid, cand, reduce="amin")
                improved = best < upper
                take = wrong & improved[pid] & (cand == best[pid])
                witness[pid[take]] = points[take]
                upper = torch.minimum(upper, best)
            # 2. Drop cells that can no longer change an answer.
            o_min = ((centre.abs() - half).clamp_min(0.0)).amax(dim=1)
            keep = relevant(o_min, upper[pid])
            # 3. Drop cells proved correct everywhere (a misclassified centre is never proved).
            open_ = keep & ~wrong
            idx = open_.nonzero().squeeze(1)
            if idx.numel():
                if method == "ibp":
                    assert layers is not None
                    lower_parts = []
                    for s in range(0, idx.numel(), CHUNK):
                        rows = idx[s:s + CHUNK]
                        box_c = x64[pid[rows]] + centre[rows]
                        with torch.no_grad():
                            lower_parts.append(ibp_margin_lower(layers, box_c - half, box_c + half, y[pid[rows]]))
                    proved = torch.cat(lower_parts) > CERTIFY_ATOL
                else:
                    margins = torch.cat(margin_parts)[idx]
                    slopes = torch.cat(slope_parts)[idx]
                    proved = margins - GRADIENT_SAFETY * slopes * half > CERTIFY_ATOL
                keep[idx[proved]] = False
            if level == levels:
                # Finest level: what is left and holds no witness is undecided.
                left = keep & ~wrong
                if bool(left.any()):
                    undecided_from.scatter_reduce_(0, pid[left], o_min[left], reduce="amin")
                break
            pid, centre = pid[keep], centre[keep]
            if pid.numel() == 0:
                break
            # 4. Split into four children.
            pid = pid.repeat_interleave(4)
            centre = (centre[:, None, :] + quarter[None] * (half / 2)).reshape(-1, 2)
    return _Search(upper=upper, witness=witness, undecided_from=undecided_from, spacing=spacing, method=method)


def exact_linf_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    *,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
) -> ExactResult:
    """Robustness of each 2-D sample at each noise level eps, decided on the whole square.

    Args:
        model: maps (B, 2) float32 points to logits (B, C); run in eval mode,
            its mode and ``requires_grad`` flags restored afterwards.
        x: test points (N, 2); unbounded (Moons has clip=None).
        y: labels (N,).
        eps_list: the noise levels eps (e.g. 0, 0.05, ..., 0.3).
        resolution: the finest quadtree spacing h is the largest 2 max(eps) / 2**L
            not above this (see the module docstring for what h guarantees).
        certify: "ibp" (a proof; needs a Linear/ReLU/LeakyReLU/LayerNorm
            Sequential), "gradient" (first-order estimate, not a proof) or
            "auto" (ibp when supported).

    Returns:
        An :class:`ExactResult`: ``robust`` of shape (len(eps_list), N) with the
        convention of :class:`imalib.evaluate.RobustnessResult` (a sample wrong on
        clean data is non-robust at every eps), plus ``certified``, ``witness``
        and ``witness_offset``.
    """
    _check_inputs(x, y, resolution)
    eps_values = [float(e) for e in eps_list]
    if any(not (e >= 0) for e in eps_values):
        raise ValueError(f"eps_list={eps_values} must be non-negative")
    began = time.perf_counter()
    radius = max(eps_values, default=0.0)
    positive = torch.tensor(sorted({e for e in eps_values if e > 0}), dtype=torch.float64, device=x.device)

    def relevant(o_min: Tensor, upper: Tensor) -> Tensor:
        # Some eps > 0 with o_min <= eps (the cell meets the eps-square) and eps < upper (not yet broken).
        if positive.numel() == 0:
            return torch.zeros_like(o_min, dtype=torch.bool)
        e = positive[None, :]
        return ((o_min[:, None] <= e + OFFSET_ATOL) & (e < upper[:, None] - OFFSET_ATOL)).any(dim=1)

    found = _search(model, x, y, radius, resolution, relevant, certify)
    eps_t = torch.tensor(eps_values, dtype=torch.float64, device=x.device)[:, None]
    broken = found.upper[None, :] <= eps_t + OFFSET_ATOL
    robust = ~broken
    proved_robust = robust & (eps_t < found.undecided_from[None, :] - OFFSET_ATOL)
    certified = broken | proved_robust
    return ExactResult(
        eps=tuple(eps_values), robust=robust.cpu(), norm="linf", seconds=time.perf_counter() - began,
        certified=certified.cpu(), witness=found.witness.cpu(), witness_offset=found.upper.cpu(),
        spacing=found.spacing, method=found.method,
    )


def linf_distance_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_radius: float,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
) -> DistanceBounds:
    """Bounds ``lower <= min(d(x), max_radius) <= upper`` on each sample's L-inf distance to a wrong prediction.

    d(x) is the smallest eps whose closed square around x holds a point the
    model does not classify as y: the L-inf margin of x (0 when x itself is
    misclassified).  ``upper`` is the offset of a real witness (or max_radius
    when none lies within it); ``lower`` is the closest undecided cell, proved
    in IBP mode.  See the module docstring for how close they are.
    """
    _check_inputs(x, y, resolution)
    if not max_radius > 0:
        raise ValueError(f"max_radius={max_radius} must be positive")
    began = time.perf_counter()

    def relevant(o_min: Tensor, upper: Tensor) -> Tensor:
        return o_min < upper

    found = _search(model, x, y, float(max_radius), resolution, relevant, certify)
    upper = found.upper.clamp(max=max_radius)
    lower = torch.minimum(found.undecided_from, upper)
    witness = found.witness.clone()
    witness[found.upper > max_radius] = float("nan")
    return DistanceBounds(lower=lower.cpu(), upper=upper.cpu(), witness=witness.cpu(), spacing=found.spacing,
                          method=found.method, seconds=time.perf_counter() - began)


def exact_linf_distance(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_radius: float,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
) -> Tensor:
    """Each sample's L-inf distance to the decision boundary, capped at ``max_radius`` (float64, (N,)).

    The smallest offset |p - x|_inf of a misclassified point p the search found
    (an achieved distance, so never below the true d(x)); ``max_radius`` when
    none lies within it.  Error bound: the true capped distance lies in
    [:func:`linf_distance_bounds`.lower, this]; when the misclassified set near
    the closest point contains a closed square of side h (h <= ``resolution``,
    e.g. a locally straight boundary) this exceeds d(x) by at most h.
    """
    return linf_distance_bounds(model, x, y, max_radius=max_radius, resolution=resolution,
                                certify=certify).upper
