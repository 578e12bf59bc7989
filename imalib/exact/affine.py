"""Certified bounds on a model's logit differences over an axis-aligned cell (affine arithmetic, float64).

A cell is a zonotope with the two input directions as generators; every neuron
adds one interval error term, and LayerNorm is bounded by a first-order
expansion with a rigorous second-order remainder. See :mod:`imalib.exact`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BOX_PAD: float = 1e-12
"""Each cell is widened by this before it is certified, so that float64
rounding of cell edges leaves no gap between neighbours."""

_BOUND_LAYERS = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.LayerNorm, nn.Identity, nn.Dropout, nn.Flatten)


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
    last_weight = layers[-1].weight
    assert isinstance(last_weight, torch.Tensor)
    device = last_weight.device
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
