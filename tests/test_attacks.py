"""The attack contract, the linear-model oracle, and the cross-check against advertorch."""

from __future__ import annotations

import pytest
import torch

from imalib.attacks import bpgd, pgd
from imalib.norms import lp_norm

NORMS = ["linf", "l2"]
LOSSES = ["ce", "margin"]


def run_pgd(model, x, y, eps, norm, loss="ce", seed=0, **kw):
    generator = torch.Generator().manual_seed(seed)
    kw.setdefault("clip", (0.0, 1.0))
    kw.setdefault("rand_init", True)
    return pgd(model, x, y, eps, norm=norm, steps=10, step_size=0.25 * (eps if isinstance(eps, float) else eps.max()),
               loss=loss, generator=generator, **kw)


def run_bpgd(model, x, y, eps, norm, seed=0, **kw):
    generator = torch.Generator().manual_seed(seed)
    kw.setdefault("clip", (0.0, 1.0))
    return bpgd(model, x, y, eps, norm=norm, steps=10, generator=generator, **kw).x_n


ATTACKS = {"pgd": run_pgd, "bpgd": lambda m, x, y, e, n, loss="ce", **kw: run_bpgd(m, x, y, e, n, loss=loss, **kw)}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_contract_side_effects(attack, norm, loss, mode, image_model, images):
    x, y = images
    x_before = x.clone()
    image_model.train(mode == "train")
    ATTACKS[attack](image_model, x, y, 0.1 if norm == "linf" else 1.0, norm, loss=loss)
    assert image_model.training == (mode == "train")
    assert all(p.grad is None for p in image_model.parameters())
    assert all(p.requires_grad for p in image_model.parameters())
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("eps_kind", ["scalar", "tensor"])
def test_contract_ball_and_box(attack, norm, loss, eps_kind, image_model, images):
    x, y = images
    base = 0.1 if norm == "linf" else 1.0
    eps = base if eps_kind == "scalar" else base * torch.linspace(0.2, 1.0, x.shape[0])
    x_adv = ATTACKS[attack](image_model, x, y, eps, norm, loss=loss)
    limit = torch.as_tensor(eps) if eps_kind == "tensor" else torch.full((x.shape[0],), base)
    assert (lp_norm(x_adv - x, norm) <= limit + 1e-5).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("norm", NORMS)
def test_contract_seeded(attack, norm, image_model, images):
    x, y = images
    eps = 0.1 if norm == "linf" else 1.0
    a = ATTACKS[attack](image_model, x, y, eps, norm, seed=5)
    b = ATTACKS[attack](image_model, x, y, eps, norm, seed=5)
    c = ATTACKS[attack](image_model, x, y, eps, norm, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", LOSSES)
def test_contract_batch_equals_single(attack, norm, loss, image_model, images):
    x, y = images
    eps = 0.1 if norm == "linf" else 1.0
    batch = ATTACKS[attack](image_model, x, y, eps, norm, loss=loss, rand_init=False)
    for i in range(x.shape[0]):
        single = ATTACKS[attack](image_model, x[i:i + 1], y[i:i + 1], eps, norm, loss=loss, rand_init=False)
        assert torch.allclose(batch[i:i + 1], single, atol=1e-5)


def test_per_sample_eps_equals_scalar(image_model, images):
    x, y = images
    scalar = run_pgd(image_model, x, y, 0.1, "linf", seed=2)
    vector = run_pgd(image_model, x, y, torch.full((x.shape[0],), 0.1), "linf", seed=2)
    assert torch.equal(scalar, vector)


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("norm", NORMS)
def test_clip_none_leaves_the_box(attack, norm, linear_model):
    x = torch.tensor([[1.5, -0.7], [0.9, 2.0]])
    y = linear_model(x).argmax(dim=1)
    x_adv = ATTACKS[attack](linear_model, x, y, 0.5, norm, clip=None)
    assert (lp_norm(x_adv - x, norm) <= 0.5 + 1e-6).all()
    assert x_adv.max() > 1.0 or x_adv.min() < 0.0


def test_eps_zero_returns_x(image_model, images):
    x, y = images
    assert torch.equal(run_pgd(image_model, x, y, 0.0, "linf"), x)


def test_wrong_per_sample_eps_shape_is_rejected(image_model, images):
    x, y = images
    with pytest.raises(ValueError, match="one value per sample"):
        run_pgd(image_model, x, y, torch.ones(3), "linf")


# --- the analytic oracle: a linear two-class model -------------------------------------------------

def exact_distance(model, x, norm):
    dual = 1 if norm == "linf" else 2
    return (x @ model.w + model.b).abs() / model.w.norm(p=dual)


def oracle_points(model, n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator) * 0.6
    return x, model(x).argmax(dim=1)


@pytest.mark.parametrize("norm", NORMS)
def test_bpgd_straight_line_matches_exact_distance(norm, linear_model):
    x, y = oracle_points(linear_model)
    eps, steps, alpha, n_binary = 0.5, 20, 4.0, 10
    result = bpgd(linear_model, x, y, eps, norm=norm, steps=steps, alpha=alpha, n_binary=n_binary,
                  rand_init=False, clip=None)
    exact = exact_distance(linear_model, x, norm)
    inside = exact < eps * 0.999
    assert inside.sum() > 50 and (~inside).sum() > 50
    assert result.found[inside].all()
    assert not result.found[exact > eps].any()
    interval = alpha * eps / steps / 2 ** n_binary
    error = (result.distance[inside] - exact[inside]).abs()
    assert (error <= 1e-3 * exact[inside] + interval).all()


@pytest.mark.parametrize("norm", NORMS)
def test_bpgd_random_start_lands_on_the_boundary(norm, linear_model):
    x, y = oracle_points(linear_model, seed=1)
    eps, steps, alpha, n_binary = 0.5, 20, 4.0, 10
    result = bpgd(linear_model, x, y, eps, norm=norm, steps=steps, alpha=alpha, n_binary=n_binary,
                  rand_init=True, clip=None, generator=torch.Generator().manual_seed(0))
    exact = exact_distance(linear_model, x, norm)
    assert not result.found[exact > eps].any()
    found = result.found
    assert found.sum() > 50
    logits = linear_model(result.x_n[found]).detach()
    gap = (logits[:, 1] - logits[:, 0]).abs()
    dual = 1 if norm == "linf" else 2
    # The bracket starts as two consecutive iterates (at most one step eta apart: projection onto the
    # ball and box is non-expansive) or as x and a misclassified random start (at most eps apart).
    bracket = max(alpha * eps / steps, eps)
    assert (gap <= linear_model.w.norm(p=dual) * bracket / 2 ** n_binary + 1e-5).all()
    # x_n is within one final bracket of the boundary, so it cannot be closer to x than that.
    assert (result.distance[found] >= exact[found] - bracket / 2 ** n_binary - 1e-6).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", LOSSES)
def test_pgd_flips_exactly_the_samples_within_reach(norm, loss, linear_model):
    x, y = oracle_points(linear_model, seed=2)
    eps = 0.4
    x_adv = pgd(linear_model, x, y, eps, norm=norm, steps=20, step_size=0.2 * eps, loss=loss, clip=None,
                generator=torch.Generator().manual_seed(0))
    flipped = linear_model(x_adv).argmax(dim=1) != y
    exact = exact_distance(linear_model, x, norm)
    assert flipped[exact < 0.95 * eps].all()
    assert not flipped[exact > eps].any()


def test_bpgd_refinement_never_increases_the_norm(image_model, images):
    x, y = images
    image_model.eval()
    y = image_model(x).argmax(dim=1)
    result = bpgd(image_model, x, y, 0.3, norm="linf", steps=20, rand_init=False, clip=(0.0, 1.0))
    assert result.found.any()
    assert (result.distance[result.found] <= 0.3 + 1e-6).all()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_bpgd_result_does_not_depend_on_when_crossed_samples_leave(share, monkeypatch, image_model, images):
    """Crossed samples leave the working batch at once (share 0) or only at the end (share 1): same result."""
    import sys

    x, y = images
    image_model.eval()
    y = image_model(x).argmax(dim=1)
    eps = torch.linspace(0.05, 0.4, x.shape[0])  # samples cross at different iterations
    reference = bpgd(image_model, x, y, eps, norm="linf", steps=20, clip=(0.0, 1.0),
                     generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(sys.modules["imalib.attacks.bpgd"], "COMPACT_SHARE", share)
    other = bpgd(image_model, x, y, eps, norm="linf", steps=20, clip=(0.0, 1.0),
                 generator=torch.Generator().manual_seed(4))
    assert 0 < int(reference.found.sum()) < x.shape[0]
    assert torch.equal(reference.found, other.found)
    assert torch.allclose(reference.x_n, other.x_n, atol=1e-6)


def test_bpgd_brackets_the_first_crossing_of_the_pgd_path(image_model, images):
    """Reference from the definition: run PGD one iterate at a time from BPGD's start, find the first wrong
    iterate x_(j), and bisect between x_(j-1) (x itself when j = 0) and x_(j)."""
    from imalib.attacks.bpgd import bisect_boundary
    from imalib.norms import clip_box, random_in_ball

    x, y = images
    image_model.eval()
    y = image_model(x).argmax(dim=1)
    eps = torch.linspace(0.05, 0.4, x.shape[0])
    steps, alpha = 8, 4.0
    result = bpgd(image_model, x, y, eps, norm="linf", steps=steps, alpha=alpha, clip=(0.0, 1.0),
                  generator=torch.Generator().manual_seed(5))
    start = clip_box(x + random_in_ball(x, eps, "linf", torch.Generator().manual_seed(5)), (0.0, 1.0))
    crossings = []
    for i in range(x.shape[0]):
        xi, yi, ei = x[i:i + 1], y[i:i + 1], eps[i:i + 1]
        path = [start[i:i + 1]] + [pgd(image_model, xi, yi, ei, steps=k, step_size=alpha * ei / steps, clip=(0.0, 1.0),
                                       delta_init=start[i:i + 1] - xi) for k in range(1, steps + 1)]
        wrong = [bool(image_model(p).argmax(dim=1) != yi) for p in path]
        if not any(wrong):
            assert not result.found[i]
            assert torch.allclose(result.x_n[i:i + 1], path[-1], atol=1e-5)
            continue
        j = wrong.index(True)
        crossings.append(j)
        inside, outside = bisect_boundary(image_model, xi if j == 0 else path[j - 1], path[j], yi, 10)
        assert result.found[i]
        assert torch.allclose(result.x_n[i:i + 1], (inside + outside) / 2, atol=1e-5)
    assert len(set(crossings)) >= 2  # the samples cross at different iterations
