"""The quadtree search of :mod:`imalib.exact`: cells refined only where they can change some sample's answer.

Each cell's centre and corners are evaluated by the model (exact witnesses of
a wrong prediction); a cell is certified by :mod:`imalib.exact.affine` (or the
gradient fallback) or split into four, down to the finest side h, and the few
verdicts still open get a few more generations ("deepening").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.exact.affine import BOX_PAD, _margins, affine_margin_lower, bound_layers

Certify = Literal["auto", "affine", "gradient"]

DEFAULT_RESOLUTION: float = 1e-3
"""Default finest cell side h (input units).  A misclassified region inside an
eps-square is found when it contains a closed axis-aligned square of side h and
no cell certified for a wrong class (certified cells are never split) covers it
without a probe point inside the square; the thinnest sliver that can be missed
has inscribed L-inf radius below h / 2. Either miss (with certify="affine")
leaves the verdict flagged not certified, never wrongly certified."""

TOP_CELL: float = 0.1
"""Target side of the top quadtree cells; the actual side is h * 2**L, the
smallest such value >= min(TOP_CELL, 2 R)."""

DEEPEN_LEVELS: int = 6
"""Extra generations (to h / 64) spent on the few cells that leave a verdict or
a distance undecided after the map at spacing h."""

CERTIFY_ATOL: float = 1e-4
"""A cell is certified only when the bound on every z_k - z_j exceeds this."""

OFFSET_ATOL: float = 1e-6
"""Slack when comparing a witness's float32 offset with eps (or a cell's
distance with eps): a witness is never more than this outside the closed
eps-square."""

GRADIENT_SAFETY: float = 2.0
"""Safety factor of the first-order (non-proof) fallback."""

CHUNK: int = 1024
"""Cells per batch in the forward and bound passes (small batches stay in cache)."""

SEARCH_THREADS: int | None = 1
"""Intra-op torch threads during a search (None keeps the caller's setting).
The search is many small tensor operations: on an idle machine a second thread
gains little, and on a machine whose cores are shared with other processes
each synchronised operation can wait milliseconds, which made the search
10-50x slower with 2 threads than with 1 in our measurements."""


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: unchanged), restoring the setting after."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _resolve_method(model: nn.Module, certify: Certify) -> tuple[str, list[nn.Module] | None]:
    if certify not in ("auto", "affine", "gradient"):
        raise ValueError(f"certify={certify!r} is not supported: use auto, affine or gradient")
    layers = bound_layers(model)
    if certify == "affine" and layers is None:
        raise ValueError(
            "certify='affine' needs an nn.Sequential of Linear/ReLU/LeakyReLU/LayerNorm layers "
            "ending with Linear; use certify='gradient' or 'auto'"
        )
    if certify == "gradient" or layers is None:
        return "gradient", None
    return "affine", layers


_CORNERS = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
_QUARTERS = _CORNERS[1:]


def _children(centre: Tensor, side: float) -> Tensor:
    """Centres of the four quarters of each cell of ``side``."""
    return (centre[:, None, :] + _QUARTERS[None] * (side / 4)).reshape(-1, 2)


class _Search:
    """The quadtree over the samples' squares, keeping every sample's nearest witness up to date.

    ``reach(upper)`` maps the samples' current nearest-witness offsets to the
    radius (per sample, -inf for none) within which a cell can still change
    that sample's answer; it must only shrink as ``upper`` shrinks.  A cell is processed while some sample
    is within its reach (L-inf box distance); farther cells are dropped.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        radius: float,
        resolution: float,
        certify: Certify,
        reach: Callable[[Tensor], Tensor],
    ) -> None:
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x has shape {tuple(x.shape)}; the exact search needs 2-D points of shape (N, 2)")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y has shape {tuple(y.shape)}; expected ({x.shape[0]},)")
        if not resolution > 0:
            raise ValueError(f"resolution={resolution} must be positive")
        self.model = model
        self.method, self.layers = _resolve_method(model, certify)
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.xs = x.detach().cpu().float()
        self.x64 = self.xs.double()
        self.y = y.detach().cpu().long()
        self.radius = float(radius)
        self.spacing = float(resolution)
        self.reach = reach
        n = x.shape[0]
        self.upper = torch.full((n,), float("inf"), dtype=torch.float64)
        self.witness = torch.full((n, 2), float("nan"), dtype=torch.float32)
        self.certified: list[tuple[Tensor, Tensor, float]] = []  # (centres, class, side)
        self.undecided: list[tuple[Tensor, float]] = []  # (centres, side)
        self.cells = 0
        with frozen_eval(model), torch.no_grad():
            clean = (
                torch.cat(
                    [model(self.xs[s : s + CHUNK].to(self.device)).argmax(dim=1).cpu() for s in range(0, n, CHUNK)]
                )
                if n
                else torch.zeros(0, dtype=torch.long)
            )
        wrong = clean != self.y
        self.upper[wrong] = 0.0  # x itself is the witness
        self.witness[wrong] = self.xs[wrong]

    # -- witnesses ---------------------------------------------------------------------------
    def _observe(self, points: Tensor, labels: Tensor) -> None:
        """Lower each sample's ``upper`` to its nearest evaluated point predicted other than its label."""
        for label in self.y.unique().tolist():
            bad = points[labels != label]
            rows = ((self.y == label) & (self.upper > 0)).nonzero().squeeze(1)
            if bad.shape[0] == 0 or rows.numel() == 0:
                continue
            dist, idx = cKDTree(bad.double().numpy()).query(
                self.x64[rows].numpy(), k=1, p=np.inf, distance_upper_bound=self.radius + 1.0
            )
            dist_t = torch.from_numpy(np.asarray(dist, dtype=np.float64))
            better = dist_t < self.upper[rows]
            self.upper[rows[better]] = dist_t[better]
            self.witness[rows[better]] = bad[torch.from_numpy(np.asarray(idx, dtype=np.int64))[better]]

    # -- relevance ---------------------------------------------------------------------------
    def relevant(self, centre: Tensor, half: float) -> Tensor:
        """Cells within some sample's reach: L-inf box distance <= reach_i + OFFSET_ATOL."""
        reach = self.reach(self.upper)
        active = (reach >= 0).nonzero().squeeze(1)
        mask = torch.zeros(centre.shape[0], dtype=torch.bool)
        if centre.shape[0] == 0 or active.numel() == 0:
            return mask
        limit = float(reach[active].max()) + half + 2 * OFFSET_ATOL
        pairs = cKDTree(centre.numpy()).sparse_distance_matrix(
            cKDTree(self.x64[active].numpy()), limit, p=np.inf, output_type="ndarray"
        )
        if len(pairs):
            cell = torch.from_numpy(pairs["i"].astype(np.int64))
            sample = torch.from_numpy(pairs["j"].astype(np.int64))
            box = torch.from_numpy(pairs["v"].astype(np.float64)) - half
            mask[cell[box <= reach[active][sample] + OFFSET_ATOL]] = True
        return mask

    # -- cells -------------------------------------------------------------------------------
    def _classify(self, centre: Tensor, half: float) -> tuple[Tensor, Tensor]:
        """Evaluate each cell ``centre +- half`` at its centre and corners and try to certify the centre's class.

        A cell whose corners disagree with its centre holds two classes and is
        not sent to the bound.  Returns the centre's class and the proof flag.
        """
        preds, proved = [], []
        for s in range(0, centre.shape[0], CHUNK):
            exact = centre[s : s + CHUNK]
            n = exact.shape[0]
            points = (exact[:, None, :] + _CORNERS[None] * half).reshape(-1, 2).float()
            fed = points.to(self.device, copy=True)
            gradient = self.method == "gradient"
            with torch.enable_grad() if gradient else torch.no_grad():
                if gradient:
                    fed.requires_grad_(True)
                logits = self.model(fed)
            labels = logits.detach().argmax(dim=1).cpu()
            self._observe(points, labels)
            labels = labels.reshape(n, 5)
            k = labels[:, 0]
            good = (labels == k[:, None]).all(dim=1)
            rows = good.nonzero().squeeze(1)
            if rows.numel():
                if gradient:
                    m = _margins(logits.reshape(n, 5, -1)[:, 0], k.to(self.device))
                    (grad,) = torch.autograd.grad(m.sum(), fed)
                    slope = grad.reshape(n, 5, 2)[:, 0].abs().sum(dim=1).double().cpu()
                    bound = (m.detach().double().cpu() - GRADIENT_SAFETY * slope * (half + BOX_PAD))[rows]
                else:
                    assert self.layers is not None
                    with torch.no_grad():
                        bound = affine_margin_lower(self.layers, exact[rows], half, k[rows]).cpu()
                good[rows] = bound > CERTIFY_ATOL
            preds.append(k)
            proved.append(good)
        return torch.cat(preds), torch.cat(proved)

    def refine(
        self,
        centre: Tensor,
        side: float,
        levels: int,
        keep: Callable[[Tensor, float], Tensor] | None = None,
        set_aside: bool = False,
    ) -> None:
        """Process cells of ``side`` and up to ``levels`` generations of their children.

        ``keep(centres, half)`` (default :meth:`relevant`) picks the cells worth
        processing; the others are dropped or, with ``set_aside``, recorded as
        undecided.  Cells unproved after the last generation are undecided.
        """
        keep = keep or self.relevant
        with frozen_eval(self.model):
            for level in range(levels + 1):
                half = side / 2
                chosen = keep(centre, half)
                if set_aside and not bool(chosen.all()):
                    self.undecided.append((centre[~chosen], side))
                centre = centre[chosen]
                if centre.shape[0] == 0:
                    return
                preds, proved = self._classify(centre, half)
                self.cells += centre.shape[0]
                self.certified.append((centre[proved], preds[proved], side))
                centre = centre[~proved]
                if level == levels:
                    self.undecided.append((centre, side))
                    return
                centre, side = _children(centre, side), half

    def run(self) -> None:
        """The map at spacing h over the bounding box of all squares ``[x_i - radius, x_i + radius]^2``."""
        if self.radius <= 0 or self.xs.shape[0] == 0:
            return
        levels = max(0, math.ceil(math.log2(min(TOP_CELL, 2.0 * self.radius) / self.spacing) - 1e-9))
        top = self.spacing * 2**levels
        origin = self.x64.amin(dim=0) - self.radius
        counts = ((self.x64.amax(dim=0) + self.radius - origin) / top).ceil().long().clamp_min(1)
        ix, iy = torch.meshgrid(torch.arange(int(counts[0])), torch.arange(int(counts[1])), indexing="ij")
        centre = origin + (torch.stack([ix.flatten(), iy.flatten()], dim=1).double() + 0.5) * top
        self.refine(centre, top, levels)

    def deepen(self, anchors: Tensor, reach: Tensor, levels: int) -> None:
        """Refine, up to ``levels`` more generations, the undecided cells within ``reach[j]`` of ``anchors[j]``."""
        if anchors.shape[0] == 0 or levels <= 0:
            return
        a = anchors.detach().cpu().double()
        r = reach.detach().cpu().double()

        def close(c: Tensor, half: float) -> Tensor:
            if c.shape[0] == 0:
                return torch.zeros(0, dtype=torch.bool)
            box = ((c[:, None, :] - a[None]).abs().amax(dim=2) - half).clamp_min(0.0)  # (cells, anchors)
            return (box <= r[None] + OFFSET_ATOL).any(dim=1)

        blocks, self.undecided = self.undecided, []
        for centres, side in blocks:
            chosen = close(centres, side / 2)
            self.undecided.append((centres[~chosen], side))
            if bool(chosen.any()):
                self.refine(_children(centres[chosen], side), side / 2, levels - 1, close, set_aside=True)

    # -- answers -----------------------------------------------------------------------------
    def lower(self) -> Tensor:
        """Per sample, the L-inf box distance to the nearest kept cell not certified for its label."""
        lower = torch.full_like(self.upper, float("inf"))
        lower[self.upper == 0] = 0.0
        for label in self.y.unique().tolist():
            rows = (self.y == label).nonzero().squeeze(1)
            query = self.x64[rows].numpy()
            by_side: dict[float, list[Tensor]] = {}
            for centres, side in [(c[k != label], side) for c, k, side in self.certified] + self.undecided:
                if centres.shape[0]:
                    by_side.setdefault(side, []).append(centres)
            for side, blocks in by_side.items():
                dist, _ = cKDTree(torch.cat(blocks).numpy()).query(query, k=1, p=np.inf)
                box = (torch.from_numpy(np.asarray(dist, dtype=np.float64)) - side / 2 - BOX_PAD).clamp_min(0.0)
                lower[rows] = torch.minimum(lower[rows], box)
        return lower
