"""Exact L-inf robustness for 2-D inputs (Moons), instead of the paper's 100-step PGD upper bound.

For a point x in the plane the L-inf ball of radius eps is a square, small
enough to search completely. A quadtree maps the classifier's decision regions
once over the union of all test squares (:mod:`imalib.exact.quadtree`); every
evaluated point is a real input, so a misclassified one is an exact witness of
"not robust"; a cell is certified to hold one class by an affine-arithmetic
bound on the logit differences (:mod:`imalib.exact.affine`), so "robust" is
proved, not estimated. A misclassified region that contains a closed square of
side ``resolution`` (h, default 1e-3) is found, with one exception: the
refinement never splits a cell once it is certified, for any class, so a cell
certified for a wrong class that overlaps the eps-square with none of its probe
points inside it yields no witness. Such a verdict, like one near a sliver
thinner than h, comes out robust but *not certified* (the lower count of
:func:`exact_linf_robust` treats wrong-class certified cells as breaks), never
wrongly certified. ``ExactResult.accuracy`` counts the uncertified verdicts as
robust, so it is an upper bound by at most ``undecided / N``; the Moons chapter
prints the undecided total. (Checked on the committed Moons runs: every
undecided verdict there is a near-tie a few 1e-6 outside eps, none the case
above.) Models the bound does not support fall back to a first-order
(gradient) estimate.

The full specification (the four steps, the guarantee and its proof sketch,
the fallback and the distance bounds) is in the book's Method chapter
(``book/exact-spec.md`` until it is placed there).

Entry points: :func:`exact_linf_robust` (robust accuracy per eps, an
:class:`ExactResult`), :func:`linf_distance_bounds` (per-sample bounds on the
L-inf margin, :class:`DistanceBounds`) and :func:`exact_linf_distance`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from imalib.evaluate import RobustnessResult
from imalib.exact.affine import BOX_PAD, affine_margin_lower, bound_layers
from imalib.exact.quadtree import (
    CERTIFY_ATOL,
    CHUNK,
    DEEPEN_LEVELS,
    DEFAULT_RESOLUTION,
    GRADIENT_SAFETY,
    OFFSET_ATOL,
    SEARCH_THREADS,
    TOP_CELL,
    Certify,
    _Search,
    _torch_threads,
)


@dataclass(frozen=True)
class ExactResult(RobustnessResult):
    """Exact per-sample L-inf robustness of 2-D inputs: RobustnessResult's fields plus the evidence.

    ``robust[k, i]``: no point predicted other than y_i was found in the closed
    square ``[x_i - eps_k, x_i + eps_k]^2`` (eps 0: x_i itself is classified
    y_i), the convention of :class:`imalib.evaluate.RobustnessResult`.
    ``certified[k, i]``: that verdict is proved (a witness for non-robust; for
    robust, every cell within eps_k certified for y_i).
    ``witness[i]``: the misclassified point nearest x_i in L-inf among those
    evaluated (NaN if none within the largest eps), at offset
    ``witness_offset[i]`` (inf if none).  ``spacing`` is h, ``method`` the
    certificate ("affine" or "gradient"), ``cells`` the number of cells evaluated.
    """

    certified: Tensor
    witness: Tensor
    witness_offset: Tensor
    spacing: float
    method: str
    cells: int

    @property
    def undecided(self) -> list[int]:
        """Per eps, the number of samples whose verdict is not proved (all 0: the numbers are exact)."""
        return [int(v) for v in (~self.certified).sum(dim=1)]


@dataclass(frozen=True)
class DistanceBounds:
    """Per-sample bounds ``lower <= min(d(x), max_radius) <= upper`` on the L-inf distance to a wrong prediction.

    ``witness`` is the point at offset ``upper`` (NaN when none was found
    within ``max_radius``; then ``upper == max_radius``).  ``lower`` is proved
    only for method "affine".
    """

    lower: Tensor
    upper: Tensor
    witness: Tensor
    spacing: float
    method: str
    cells: int
    seconds: float


def exact_linf_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    *,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
    deepen: int = DEEPEN_LEVELS,
    threads: int | None = SEARCH_THREADS,
) -> ExactResult:
    """Whether the model predicts y everywhere in each square ``[x - eps, x + eps]^2``, for every eps.

    Args:
        model: maps (B, 2) float32 points to logits (B, C); run in eval mode,
            its mode and ``requires_grad`` flags restored afterwards.
        x: test points (N, 2), unbounded (Moons has clip=None).
        y: labels (N,).
        eps_list: noise levels eps (e.g. 0, 0.05, ..., 0.3).
        resolution: the finest cell side h; see the module docstring for what
            it guarantees (regions containing an h-square are found unless a
            wrong-class certified cell hides them: then not certified).
        certify: "affine" (a proof; needs a Linear/ReLU/LeakyReLU/LayerNorm
            Sequential), "gradient" (first-order estimate) or "auto".
        deepen: extra quadtree generations (down to h / 2**deepen) spent only
            on the undecided cells that leave some (sample, eps) verdict
            unproved; 0 turns this off.
        threads: torch intra-op threads while searching (restored afterwards);
            None keeps the caller's setting.  See :data:`SEARCH_THREADS`.

    Returns:
        :class:`ExactResult` with ``robust`` of shape (len(eps_list), N) in the
        convention of :class:`imalib.evaluate.RobustnessResult` (a sample wrong
        on clean data is non-robust at every eps), ``certified``, ``witness``
        and ``witness_offset``.
    """
    eps_values = [float(e) for e in eps_list]
    if any(not e >= 0 for e in eps_values):
        raise ValueError(f"eps_list={eps_values} must be non-negative")
    began = time.perf_counter()
    radius = max(eps_values, default=0.0)
    levels_t = torch.tensor(sorted({e for e in eps_values if e > 0}), dtype=torch.float64)

    def reach(upper: Tensor) -> Tensor:
        # The largest eps > 0 not yet broken: cells within it can still change a verdict.
        if levels_t.numel() == 0:
            return torch.full_like(upper, -math.inf)
        open_ = levels_t[None, :] < upper[:, None] - OFFSET_ATOL
        return torch.where(open_, levels_t[None, :], torch.full_like(open_, -math.inf, dtype=torch.float64)).amax(dim=1)

    eps_t = torch.tensor(eps_values, dtype=torch.float64)[:, None]
    with _torch_threads(threads):
        search = _Search(model, x, y, radius, resolution, certify, reach)
        search.run()

        def verdicts() -> tuple[Tensor, Tensor]:
            broken = search.upper[None, :] <= eps_t + OFFSET_ATOL
            return broken, ~broken & (eps_t < search.lower()[None, :] - OFFSET_ATOL)

        broken, proved_robust = verdicts()
        open_k, open_i = (~broken & ~proved_robust).nonzero(as_tuple=True)
        if deepen > 0 and open_i.numel():
            search.deepen(search.xs[open_i], eps_t[open_k, 0], deepen)
            broken, proved_robust = verdicts()
    keep = search.upper <= radius + OFFSET_ATOL
    witness = torch.where(keep[:, None], search.witness, torch.full_like(search.witness, float("nan")))
    offset = torch.where(keep, search.upper, torch.full_like(search.upper, float("inf")))
    return ExactResult(
        eps=tuple(eps_values),
        robust=~broken,
        norm="linf",
        seconds=time.perf_counter() - began,
        certified=broken | proved_robust,
        witness=witness,
        witness_offset=offset,
        spacing=search.spacing,
        method=search.method,
        cells=search.cells,
    )


def linf_distance_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_radius: float,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
    deepen: int = DEEPEN_LEVELS,
    threads: int | None = SEARCH_THREADS,
) -> DistanceBounds:
    """Bounds ``lower <= min(d(x), max_radius) <= upper`` on each sample's L-inf distance to a wrong prediction.

    d(x) is the smallest eps whose closed square around x holds a point the
    model does not classify as y (the paper's margin of x, measured in L-inf;
    0 when x itself is misclassified).  ``upper`` is the offset of a real
    witness, or ``max_radius`` when none lies within it; ``lower`` is the
    distance to the nearest cell not certified for y (a proof in "affine" mode).
    Samples whose bounds are still more than h apart get up to ``deepen`` more
    quadtree generations on the cells closer than ``upper - h`` (0 turns this
    off), which usually brings ``upper - lower`` to at most h.  ``threads`` as
    in :func:`exact_linf_robust`.
    """
    if not max_radius > 0:
        raise ValueError(f"max_radius={max_radius} must be positive")
    began = time.perf_counter()
    radius = float(max_radius)

    def reach(upper: Tensor) -> Tensor:
        # Cells closer than the nearest witness can still lower it.
        return torch.where(upper > 0, upper.clamp(max=radius), torch.full_like(upper, -math.inf))

    with _torch_threads(threads):
        search = _Search(model, x, y, radius, resolution, certify, reach)
        search.run()
        upper = search.upper.clamp(max=radius)
        loose = (upper - torch.minimum(search.lower(), upper)) > search.spacing + OFFSET_ATOL
        if deepen > 0 and bool(loose.any()):
            # Only cells closer than upper - h can leave a gap wider than h.
            search.deepen(search.xs[loose], upper[loose] - search.spacing, deepen)
            upper = search.upper.clamp(max=radius)
        lower = torch.minimum(search.lower(), upper)
    witness = search.witness.clone()
    witness[search.upper > radius] = float("nan")
    return DistanceBounds(
        lower=lower,
        upper=upper,
        witness=witness,
        spacing=search.spacing,
        method=search.method,
        cells=search.cells,
        seconds=time.perf_counter() - began,
    )


def exact_linf_distance(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_radius: float,
    resolution: float = DEFAULT_RESOLUTION,
    certify: Certify = "auto",
    deepen: int = DEEPEN_LEVELS,
    threads: int | None = SEARCH_THREADS,
) -> Tensor:
    """Each sample's L-inf distance to the decision boundary, capped at ``max_radius`` (float64, shape (N,)).

    The offset |p - x|_inf of the nearest point p found that the model does not
    classify as y (an achieved distance, never below the true d(x)), or
    ``max_radius`` when there is none within it.  Error bound: the true capped
    distance lies in [:func:`linf_distance_bounds`'s ``lower``, this value]; this
    value exceeds d(x) by at most h = ``resolution`` whenever the misclassified
    set contains a closed h-square within offset d(x) + h of x (e.g. a boundary
    that is locally straight at its closest point).
    """
    return linf_distance_bounds(
        model, x, y, max_radius=max_radius, resolution=resolution, certify=certify, deepen=deepen, threads=threads
    ).upper


__all__ = [
    "BOX_PAD",
    "CERTIFY_ATOL",
    "CHUNK",
    "DEEPEN_LEVELS",
    "DEFAULT_RESOLUTION",
    "GRADIENT_SAFETY",
    "OFFSET_ATOL",
    "SEARCH_THREADS",
    "TOP_CELL",
    "Certify",
    "DistanceBounds",
    "ExactResult",
    "affine_margin_lower",
    "bound_layers",
    "exact_linf_distance",
    "exact_linf_robust",
    "linf_distance_bounds",
]
