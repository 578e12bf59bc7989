"""The exact 2-D L-inf evaluator: linear ground truth, a hidden pocket PGD misses, sound bounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imalib.attacks.pgd import pgd
from imalib.evaluate import RobustnessResult
from imalib.exact import (
    ExactResult,
    affine_margin_lower,
    bound_layers,
    exact_linf_distance,
    exact_linf_robust,
    linf_distance_bounds,
)
from imalib.models import moons_mlp

from conftest import Linear2

@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many tiny tensor ops, which a second intra-op thread only slows on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
H = 2e-3  # resolution used in these tests (fast); the guarantee scales with it
TOL = 1e-5  # float32 inputs against float64 ground truth


def _linear_sequential(w: torch.Tensor, b: float) -> nn.Sequential:
    """Linear(2, 2) inside a Sequential (so the certified bound applies): z_1 - z_0 = w . x + b."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[1] = w
        layer.bias[1] = b
    return nn.Sequential(layer)


def _linear_case(kind: str):
    generator = torch.Generator().manual_seed(11)
    w, b = torch.tensor([1.3, -0.7]), 0.05
    model = _linear_sequential(w, b) if kind == "sequential" else Linear2(w, b)
    x = torch.rand(120, 2, generator=generator) * 1.2 - 0.6
    score = x.double() @ w.double() + b
    y = (score > 0).long()
    y[:6] = 1 - y[:6]  # a few misclassified points: distance 0
    distance = torch.where(torch.arange(120) < 6, torch.zeros(120, dtype=torch.float64),
                           score.abs() / w.abs().sum())
    return model, x, y, distance


@pytest.mark.parametrize("kind", ["sequential", "module"])
def test_linear_distance_matches_closed_form(kind):
    model, x, y, truth = _linear_case(kind)
    radius = 0.3
    bounds = linf_distance_bounds(model, x, y, max_radius=radius, resolution=H)
    assert bounds.method == ("affine" if kind == "sequential" else "gradient")
    capped = truth.clamp(max=radius)
    assert bool((bounds.lower <= capped + TOL).all())
    assert bool((bounds.upper >= capped - TOL).all())
    # The misclassified half-plane holds an h-square at offset <= d + h, so the witness is that close.
    assert bool((bounds.upper <= capped + H + TOL).all())
    assert torch.allclose(exact_linf_distance(model, x, y, max_radius=radius, resolution=H), bounds.upper)
    found = ~torch.isnan(bounds.witness[:, 0])
    assert bool((found == (bounds.upper < radius)).all())
    with torch.no_grad():
        assert bool((model(bounds.witness[found]).argmax(dim=1) != y[found]).all())


@pytest.mark.parametrize("kind", ["sequential", "module"])
def test_linear_robust_iff_distance_exceeds_eps(kind):
    model, x, y, truth = _linear_case(kind)
    result = exact_linf_robust(model, x, y, EPS, resolution=H)
    assert isinstance(result, ExactResult) and isinstance(result, RobustnessResult)
    assert result.robust.shape == (len(EPS), x.shape[0]) and result.robust.dtype == torch.bool
    eps = torch.tensor(EPS, dtype=torch.float64)[:, None]
    away = (truth[None, :] - eps).abs() > H  # ties within the resolution may go either way
    expected = truth[None, :] > eps
    assert bool((result.robust[away] == expected[away]).all())
    assert not bool(result.robust[0, :6].any())  # misclassified points fail at eps 0 already
    if kind == "sequential":
        assert bool(result.certified[away].all())
    result.to_frame(model=kind)  # the evaluate.RobustnessResult conventions hold


def _pocket_model(centre: tuple[float, float], radius: float) -> nn.Sequential:
    """Class 1 everywhere except an L1-disc of ``radius`` around ``centre``, where class 0 wins.

    z_1 - z_0 = 1 - 3 relu(1 - |p - centre|_1 / s) with s = 1.5 radius: flat (zero
    gradient) outside the disc, so an attacker's gradients carry no information.
    """
    s = 1.5 * radius
    a1, a2 = centre
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([-a1, a1, -a2, a2]))
        model[2].weight.fill_(-1.0 / s)
        model[2].bias.fill_(1.0)
        model[4].weight.copy_(torch.tensor([[0.0], [-3.0]]))
        model[4].bias.copy_(torch.tensor([0.0, 1.0]))
    return model


def test_finds_a_pocket_that_a_coarse_grid_and_pgd_miss():
    centre, radius = (0.0688, -0.0437), 0.01  # nearest pocket point at L-inf offset 0.0688 - 0.01
    model = _pocket_model(centre, radius)
    x, y = torch.zeros(1, 2), torch.ones(1, dtype=torch.long)
    offsets = torch.linspace(-0.1, 0.1, 17)  # a 17 x 17 grid over the eps = 0.1 square
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        assert bool((model(grid).argmax(dim=1) == 1).all()), "the pocket must fall between coarse grid points"

    result = exact_linf_robust(model, x, y, [0.0, 0.05, 0.1], resolution=H)
    assert result.robust[:, 0].tolist() == [True, True, False]
    assert bool(result.certified.all())
    witness = result.witness[0]
    with torch.no_grad():
        assert int(model(witness[None]).argmax(dim=1)) == 0
    assert float((witness - x[0]).abs().max()) <= 0.1
    distance = float(exact_linf_distance(model, x, y, max_radius=0.1, resolution=H)[0])
    assert 0.0588 - TOL <= distance <= 0.0588 + H + TOL

    # PGD from the centre (reported, not asserted): zero gradient outside the pocket.
    generator = torch.Generator().manual_seed(0)
    broken = []
    for loss in ("ce", "margin"):
        x_adv = pgd(model, x, y, 0.1, steps=100, step_size=0.01, loss=loss, clip=None, generator=generator)
        with torch.no_grad():
            broken.append(bool(model(x_adv).argmax(dim=1)[0] != y[0]))
    print(f"PGD broke the pocket sample: {broken} (exact evaluator: broken)")


@pytest.mark.parametrize("seed", [0, 1])
def test_affine_bound_is_sound_on_moons_mlp(seed):
    torch.manual_seed(seed)
    model = moons_mlp().eval()
    layers = bound_layers(model)
    assert layers is not None
    generator = torch.Generator().manual_seed(seed)
    centre = (torch.rand(64, 2, generator=generator) * 3 - 1.5).double()
    reference = moons_mlp().double().eval()
    reference.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    for half in (0.2, 0.03, 0.002):
        with torch.no_grad():
            k = reference(centre).argmax(dim=1)
            bound = affine_margin_lower(layers, centre, half, k)
            corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
            inside = torch.rand(64, 256, 2, generator=generator, dtype=torch.float64) * 2 - 1
            inside = torch.cat([inside, corners[None].expand(64, -1, -1)], dim=1)
            points = (centre[:, None, :] + half * inside).reshape(-1, 2)
            logits = reference(points).reshape(64, 260, 2)
            z_k = logits.gather(2, k[:, None, None].expand(-1, 260, 1)).squeeze(2)
            margin = (z_k - logits.gather(2, (1 - k)[:, None, None].expand(-1, 260, 1)).squeeze(2)).amin(dim=1)
        assert bool((bound <= margin + 1e-9).all())
    # Tight for small cells: most small cells away from the boundary are certified.
    with torch.no_grad():
        assert float((affine_margin_lower(layers, centre, 0.002, k) > 0).float().mean()) > 0.8


def test_every_pgd_break_is_an_exact_break():
    torch.manual_seed(1)
    model = moons_mlp().eval()  # untrained: its boundary crosses [-2, 2]^2
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(60, 2, generator=generator) * 4 - 2
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    eps_list = [0.05, 0.15, 0.3]
    result = exact_linf_robust(model, x, y, eps_list, resolution=H)
    assert bool(result.certified.all())
    assert bool((~result.robust).any())
    for k, eps in enumerate(eps_list):
        x_adv = pgd(model, x, y, eps, steps=20, step_size=eps / 5, loss="margin", clip=None,
                    generator=torch.Generator().manual_seed(k), stop_on_success=True)
        with torch.no_grad():
            pgd_broken = model(x_adv).argmax(dim=1) != y
        assert not bool((pgd_broken & result.robust[k]).any())  # PGD's accuracy is an upper bound
        broken = ~result.robust[k]
        with torch.no_grad():
            assert bool((model(result.witness[broken]).argmax(dim=1) != y[broken]).all())
        assert bool(((result.witness[broken] - x[broken]).abs().amax(dim=1) <= eps + 1e-6).all())
    # Monotone in eps by construction.
    assert bool((result.robust[1:] <= result.robust[:-1]).all())


def test_input_checks():
    model = moons_mlp()
    with pytest.raises(ValueError, match="2-D points"):
        exact_linf_robust(model, torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), [0.1])
    with pytest.raises(ValueError, match="expected"):
        exact_linf_robust(model, torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), [0.1])
    with pytest.raises(ValueError, match="non-negative"):
        exact_linf_robust(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), [-0.1])
    with pytest.raises(ValueError, match="certify='affine'"):
        exact_linf_robust(Linear2(torch.ones(2), 0.0), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), [0.1],
                          certify="affine")
    with pytest.raises(ValueError, match="max_radius"):
        exact_linf_distance(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), max_radius=0.0)
    only_clean = exact_linf_robust(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), [0.0])
    assert only_clean.robust.shape == (1, 3) and only_clean.cells == 0
