"""Exact L-inf robustness for 2-D inputs (Moons), instead of the paper's 100-step PGD upper bound.

The paper measures robust accuracy with PGD, which only ever finds adversarial
examples, so its numbers are upper bounds.  For a point x in the plane the
L-inf ball of radius eps is the square ``[x - eps, x + eps]^2``, small enough to
search completely.  The classifier's decision map does not depend on the test
sample, so this module maps it *once* over the union of all test squares and
then answers every (sample, eps) question from that map:

1. **Decision map (a quadtree).**  The bounding box of all squares
   ``[x_i - R, x_i + R]^2`` (R the largest eps, or ``max_radius``) is tiled with
   top cells of side ``h * 2**L``.  Each cell has its centre and four corners
   evaluated by the model, then is either *certified* (the model predicts one
   class everywhere in the closed cell) or split into four, down to the finest
   side ``h = resolution``.  Finest cells that are not certified are
   *undecided*.  A cell is processed only while it can still change some
   sample's answer: it must lie within that sample's *reach*, the largest eps
   at which the sample is not yet broken (robust accuracy) or its current
   nearest-witness offset (distances).  So the work concentrates where the
   decision boundary meets the squares' edges, not along the whole boundary.

2. **Witnesses (exact "not robust").**  Every evaluated point ``p`` is a real
   float32 input with a real prediction.  A sample is non-robust at eps when
   some ``p`` predicted != y has ``|p - x|_inf <= eps`` (measured on the
   float32 point, with :data:`OFFSET_ATOL` slack for the rounding of a point
   lying exactly on the square's edge) or when x itself is misclassified.  Such
   a verdict is never an approximation, and the point is returned.

3. **Certificates (sound "robust").**  For an ``nn.Sequential`` of Linear /
   ReLU / LeakyReLU / LayerNorm (/ Identity / Dropout / Flatten) layers ending
   in Linear, such as :func:`imalib.models.moons_mlp`, a cell is certified by
   an affine-arithmetic bound (a zonotope with the two input directions as
   generators and one interval error per neuron, in float64; LayerNorm by a
   first-order expansion with a rigorous second-order remainder): the lower
   bound of ``z_k - z_j`` over the whole cell must exceed :data:`CERTIFY_ATOL`
   for every j != k, k the class at the centre.  (Plain interval bound
   propagation through LayerNorm was far too loose: it could not certify cells
   wider than ~0.003 on an untrained model.)  The bound's slack shrinks with
   the cell, to second order where no ReLU changes sign inside it, so only
   cells near the decision boundary are refined; a cell whose corners disagree
   with its centre holds two classes and skips the bound.  A sample is
   certified robust at eps when no cell within eps of it is undecided or
   certified for another class.

4. **Deepening.**  The few (sample, eps) verdicts still unproved at spacing h
   get up to :data:`DEEPEN_LEVELS` more generations on just the cells within
   that eps of that sample.  What then stays undecided is a near-tie: the
   boundary passes within about ``CERTIFY_ATOL / |grad(z_k - z_j)|`` of the
   square's edge, closer than any certificate can resolve.

Guarantee (certify="affine", the default for supported models).  The finest cell
centres form a lattice of spacing h and every closed axis-aligned square of
side h in the box contains one of them; a cell holding a misclassified point is
never certified and stays within the reach of any sample whose eps-square (or
distance) it can affect, so its descendants down to that lattice point are
evaluated.  Hence **a misclassified region inside an eps-square that contains a
closed axis-aligned square of side h is always found** (non-robust, with a
witness; up to the float32 rounding, ~1e-7, of the lattice point fed to the
model).  The thinnest misclassified sliver that can escape contains no such
square (its inscribed L-inf radius is below h / 2): it can only hide in
undecided cells, and then the sample's verdict is flagged as not certified
(``certified`` is False, ``robust`` is True) rather than wrongly certified.
The default ``resolution`` :data:`DEFAULT_RESOLUTION` = 1e-3 is h.  "Certified"
holds up to float64 rounding, which :data:`CERTIFY_ATOL` absorbs together with
the float32 rounding of the model's own forward pass.

Fallback (certify="gradient", chosen automatically for other models).  A cell
is taken as constant when ``margin(centre) - GRADIENT_SAFETY * ||grad||_1 *
side / 2 > CERTIFY_ATOL``: exact for a linear model, a first-order *estimate*
for a curved one, so a pocket where the gradient at the evaluated centres is
flat can be missed however wide it is.  Witnesses stay exact, so the fallback
can only over-state robustness.

Distances.  :func:`linf_distance_bounds` returns ``lower <= min(d(x), R) <=
upper`` with ``d(x) = inf{|p - x|_inf : the model does not predict y at p}``,
the L-inf margin of x (0 when x is misclassified).  ``upper`` is the offset of
the nearest witness; ``lower`` the distance to the nearest cell not certified
for y.  If the misclassified set contains a closed square of side h whose
farthest point from x is at offset D, then ``upper <= D``: for a boundary that
is locally straight at the closest point, ``upper <= d(x) + h``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from imalib.context import frozen_eval
from imalib.evaluate import RobustnessResult

Certify = Literal["auto", "affine", "gradient"]

DEFAULT_RESOLUTION: float = 1e-3
"""Default finest cell side h (input units).  A misclassified region inside an
eps-square is always found when it contains a closed axis-aligned square of
side h; the thinnest sliver that can be missed has inscribed L-inf radius below
h / 2, and (with certify="affine") it leaves the verdict flagged not certified."""

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

BOX_PAD: float = 1e-12
"""Each cell is widened by this before it is certified, so that float64
rounding of cell edges leaves no gap between neighbours."""

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

_BOUND_LAYERS = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.LayerNorm, nn.Identity, nn.Dropout, nn.Flatten)


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


# ----------------------------------------------------------------------------------------------
# Bounds on the logit differences over a cell


def bound_layers(model: nn.Module) -> list[nn.Module] | None:
    """The model as a flat list of layers the certified bound supports, or None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers: list[nn.Module] = []
    for child in model:
        inner = bound_layers(child) if isinstance(child, nn.Sequential) else [child]
        if inner is None:
            return None
        layers.extend(inner)
    if not layers or not isinstance(layers[-1], nn.Linear):
        return None
    for layer in layers:
        if not isinstance(layer, _BOUND_LAYERS):
            return None
        if isinstance(layer, nn.LayerNorm) and len(layer.normalized_shape) != 1:
            return None
        if isinstance(layer, nn.LeakyReLU) and not 0.0 <= layer.negative_slope <= 1.0:
            return None
    return layers


def _affine_layer_norm(layer: nn.LayerNorm, c: Tensor, g: Tensor, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm of z = c + g^T delta + e * xi (delta in [-1, 1]^2, |xi_i| <= 1), as the same form."""
    d = c.shape[1]
    # u = z - mean(z) is linear; |I - 11^T/d| e = (1 - 2/d) e + sum(e)/d.
    u = c - c.mean(dim=1, keepdim=True)
    g = g - g.mean(dim=2, keepdim=True)
    e = (1.0 - 2.0 / d) * e + e.sum(dim=1, keepdim=True) / d
    rho = g.abs().sum(dim=1) + e  # |u_i - u0_i| <= rho_i
    # v = mean(u^2) + eps = v0 + a_v . delta + [-ev, ev] + [0, qmax].
    v0 = u.square().mean(dim=1) + layer.eps
    a_v = (2.0 / d) * (g * u[:, None, :]).sum(dim=2)
    ev = (2.0 / d) * (u.abs() * e).sum(dim=1)
    qmax = rho.square().mean(dim=1)
    spread = a_v.abs().sum(dim=1) + ev
    v_lo = torch.clamp(v0 - spread, min=layer.eps)
    v_dev = torch.maximum(spread + qmax, v0 - v_lo)
    # r(v) = v^(-1/2) = r0 + r1 (v - v0) + R,  0 <= R <= r2(v_lo) / 2 * (v - v0)^2  (r convex, r'' decreasing).
    r0 = v0.rsqrt()
    r1 = -0.5 * r0 / v0
    rem = 0.375 * v_lo.pow(-2.5) * v_dev.square()
    lo_int = r1 * qmax - r1.abs() * ev
    hi_int = rem + r1.abs() * ev
    r_c = r0 + (lo_int + hi_int) / 2
    e_r = (hi_int - lo_int) / 2
    a_r = r1[:, None] * a_v
    rho_r = a_r.abs().sum(dim=1) + e_r  # |r - r_c| <= rho_r
    # u_i r = u0_i r_c + r_c du_i + u0_i dr + du_i dr.
    g = r_c[:, None, None] * g + a_r[:, :, None] * u[:, None, :]
    e = r_c.abs()[:, None] * e + u.abs() * e_r[:, None] + rho * rho_r[:, None]
    c = u * r_c[:, None]
    if layer.weight is not None:
        w = layer.weight.double()
        c, g, e = c * w, g * w, e * w.abs()
    if layer.bias is not None:
        c = c + layer.bias.double()
    return c, g, e


def affine_margin_lower(layers: list[nn.Module], centre: Tensor, half: float, k: Tensor) -> Tensor:
    """Lower bound on min_{j != k} (z_k - z_j) over each square ``centre +- half`` (float64, shape (n,)).

    Affine arithmetic: every pre-activation is kept as ``c + g^T delta + e * xi``
    with delta the cell's two input coordinates scaled to [-1, 1] and xi a
    per-neuron error in [-1, 1] (dropping the errors' correlations is sound).
    Linear layers are exact; a ReLU/LeakyReLU whose input interval straddles 0
    is replaced by its chord with half the chord's gap as error; LayerNorm is
    expanded to first order with a rigorous bound on the rest.
    """
    n = centre.shape[0]
    device = layers[-1].weight.device
    c = centre.to(device=device, dtype=torch.float64)
    g = torch.zeros((n, 2, 2), dtype=torch.float64, device=device)
    g[:, 0, 0] = half
    g[:, 1, 1] = half
    e = torch.full((n, 2), BOX_PAD, dtype=torch.float64, device=device)
    k = k.to(device)
    for layer in layers[:-1]:
        if isinstance(layer, nn.Linear):
            w = layer.weight.double()
            c = c @ w.T
            if layer.bias is not None:
                c = c + layer.bias.double()
            g = g @ w.T
            e = e @ w.abs().T
        elif isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            a = float(getattr(layer, "negative_slope", 0.0))
            rho = g.abs().sum(dim=1) + e
            lo, hi = c - rho, c + rho
            cross = (lo < 0) & (hi > 0)
            slope = torch.where(lo >= 0, torch.ones_like(c), torch.full_like(c, a))
            chord = (hi - a * lo) / torch.where(cross, hi - lo, torch.ones_like(c))
            slope = torch.where(cross, chord, slope)
            gap = torch.where(cross, lo * (a - slope), torch.zeros_like(c))  # chord(0) - f(0) >= 0
            c = slope * c + gap / 2
            g = g * slope[:, None, :]
            e = slope * e + gap / 2
        elif isinstance(layer, nn.LayerNorm):
            c, g, e = _affine_layer_norm(layer, c, g, e)
        # Identity, Dropout (eval mode) and Flatten of (n, d) change nothing.
    last = layers[-1]
    assert isinstance(last, nn.Linear)
    w = last.weight.double()
    b = last.bias.double() if last.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=device)
    out = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    classes = w.shape[0]
    for label in range(classes):
        rows = (k == label).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        others = [j for j in range(classes) if j != label]
        dw, db = w[label][None, :] - w[others], b[label] - b[others]
        bound = c[rows] @ dw.T + db - (g[rows] @ dw.T).abs().sum(dim=1) - e[rows] @ dw.abs().T
        out[rows] = bound.amin(dim=1)
    return out


def _margins(logits: Tensor, k: Tensor) -> Tensor:
    """z_k - max_{j != k} z_j per row."""
    z_k = logits.gather(1, k[:, None]).squeeze(1)
    others = logits.masked_fill(nn.functional.one_hot(k, logits.shape[1]).bool(), float("-inf"))
    return z_k - others.amax(dim=1)


# ----------------------------------------------------------------------------------------------
# The search


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
        raise ValueError("certify='affine' needs an nn.Sequential of Linear/ReLU/LeakyReLU/LayerNorm layers "
                         "ending with Linear; use certify='gradient' or 'auto'")
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

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, radius: float, resolution: float,
                 certify: Certify, reach: Callable[[Tensor], Tensor]) -> None:
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
            clean = torch.cat([model(self.xs[s:s + CHUNK].to(self.device)).argmax(dim=1).cpu()
                               for s in range(0, n, CHUNK)]) if n else torch.zeros(0, dtype=torch.long)
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
            dist, idx = cKDTree(bad.double().numpy()).query(self.x64[rows].numpy(), k=1, p=np.inf,
                                                             distance_upper_bound=self.radius + 1.0)
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
            cKDTree(self.x64[active].numpy()), limit, p=np.inf, output_type="ndarray")
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
            exact = centre[s:s + CHUNK]
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

    def refine(self, centre: Tensor, side: float, levels: int,
               keep: Callable[[Tensor, float], Tensor] | None = None, set_aside: bool = False) -> None:
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
            it guarantees (regions containing an h-square are always found).
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
        return torch.where(open_, levels_t[None, :], torch.full_like(open_, -math.inf, dtype=torch.float64)
                           ).amax(dim=1)

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
        eps=tuple(eps_values), robust=~broken, norm="linf", seconds=time.perf_counter() - began,
        certified=broken | proved_robust, witness=witness, witness_offset=offset,
        spacing=search.spacing, method=search.method, cells=search.cells,
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
    return DistanceBounds(lower=lower, upper=upper, witness=witness, spacing=search.spacing, method=search.method,
                          cells=search.cells, seconds=time.perf_counter() - began)


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
    return linf_distance_bounds(model, x, y, max_radius=max_radius, resolution=resolution, certify=certify,
                                deepen=deepen, threads=threads).upper
