"""AutoAttack through imalib: the attack set, the change of box, the per-sample outcome, and no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imalib.autoattack import custom_attacks, evaluate_autoattack, worst_case
from imalib.evaluate import RobustnessResult, evaluate_robustness


class Linear2(nn.Module):
    """Two logits (0, w.x + b): the L-inf distance of x to the boundary is |w.x + b| / ||w||_1."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def linear_points(n: int = 200, seed: int = 0) -> tuple[Linear2, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = Linear2([1.5, -0.5], 0.2)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * 1.5  # unbounded, like Moons
    with torch.no_grad():
        score = x @ model.w + model.b
    y = (score > 0).long()
    distance = score.abs() / model.w.abs().sum()
    return model, x, y, distance


def test_attack_set_follows_the_number_of_classes():
    assert custom_attacks(2) == ("apgd-ce", "fab")
    assert custom_attacks(3) == ("apgd-ce", "fab")
    assert custom_attacks(10) == ("apgd-ce", "apgd-t")
    with pytest.raises(ValueError, match="at least two"):
        custom_attacks(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_classes_unbounded_inputs_match_the_exact_distance(norm):
    model, x, y, distance = linear_points()
    if norm == "l2":
        distance = (x @ model.w + model.b).detach().abs() / model.w.detach().norm()
    eps = [0.0, 0.1, 0.3, 0.6]
    result = evaluate_autoattack(model, x, y, norm=norm, eps_list=eps, clip=None, num_classes=2)
    robust = result.robustness.robust
    assert robust.shape == (4, 200) and robust[0].all()
    for k, e in enumerate(eps[1:], start=1):
        far, near = distance > e * 1.02, distance < e * 0.98
        assert robust[k][far].all(), "an attack inside the ball cannot cross a boundary farther than eps"
        assert not robust[k][near].any(), f"AutoAttack missed points within {e} of a linear boundary"
        assert near.any() and far.any()
    assert result.settings.attacks == ("apgd-ce", "fab") and result.settings.n_restarts == 1
    assert "unbounded" in result.settings.box


def test_two_classes_refuse_dlr_attacks_and_the_standard_set():
    model, x, y, _ = linear_points(20)
    with pytest.raises(ValueError, match="4\\+ classes"):
        evaluate_autoattack(model, x, y, norm="linf", eps_list=[0.1], clip=None, num_classes=2,
                            attacks=["apgd-ce", "apgd-t"])
    with pytest.raises(ValueError, match="3\\+ classes"):
        evaluate_autoattack(model, x, y, norm="linf", eps_list=[0.1], clip=None, num_classes=2,
                            attacks=["apgd-ce", "apgd-dlr"])
    with pytest.raises(ValueError, match="4\\+ classes"):
        evaluate_autoattack(model, x, y, norm="linf", eps_list=[0.1], clip=None, num_classes=2, version="standard")


def small_image_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[:6] = (y[:6] + 1) % 4  # a few wrong on clean data
    return model, x, y


def test_four_classes_images_in_the_unit_box():
    model, x, y = small_image_model()
    before = torch.random.get_rng_state()
    training = model.train()
    result = evaluate_autoattack(model, x, y, norm="linf", eps_list=[0.0, 0.02, 0.2], clip=(0.0, 1.0),
                                 num_classes=4)
    assert torch.equal(torch.random.get_rng_state(), before), "the global random stream must be left alone"
    assert training.training, "the model's train mode is restored"
    assert all(p.grad is None for p in model.parameters())
    robust = result.robustness.robust
    clean = model.eval()(x).argmax(dim=1) == y
    assert torch.equal(robust[0], clean) and not robust[:, :6].any()
    assert (robust[2] <= robust[0]).all() and robust[2].sum() < robust[1].sum()
    assert result.settings.attacks == ("apgd-ce", "apgd-t") and result.settings.n_target_classes == 3
    # at a noise level where PGD breaks most points, AutoAttack is not weaker than PGD
    pgd = evaluate_robustness(model, x, y, norm="linf", eps_list=[0.0, 0.02, 0.2], clip=(0.0, 1.0), steps=20)
    both = worst_case(pgd, result.robustness)
    assert both.accuracy[2] <= min(pgd.accuracy[2], result.robustness.accuracy[2])
    assert result.robustness.accuracy[2] <= pgd.accuracy[2] + 1 / 60


def test_same_seed_same_outcome():
    model, x, y = small_image_model(1)
    runs = [evaluate_autoattack(model, x, y, norm="l2", eps_list=[0.0, 0.5], clip=(0.0, 1.0), num_classes=4,
                                seed=3).robustness.robust for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_worst_case_is_the_per_sample_and():
    a = RobustnessResult(eps=(0.0, 0.1), robust=torch.tensor([[True, True, False], [True, False, False]]),
                         norm="linf", seconds=1.0)
    b = RobustnessResult(eps=(0.0, 0.1), robust=torch.tensor([[True, True, False], [False, True, False]]),
                         norm="linf", seconds=2.0)
    both = worst_case(a, b)
    assert both.robust.tolist() == [[True, True, False], [False, False, False]] and both.seconds == 3.0
    other = RobustnessResult(eps=(0.0, 0.2), robust=a.robust, norm="linf", seconds=0.0)
    with pytest.raises(ValueError, match="different eps"):
        worst_case(a, other)


def test_broken_examples_are_within_eps_and_misclassified():
    from imalib.autoattack import broken_examples

    model, x, y, distance = linear_points()
    distance = distance.detach()
    eps = [0.0, 0.1, 0.3]
    aa = evaluate_autoattack(model, x, y, norm="linf", eps_list=eps, clip=None, num_classes=2).robustness.robust
    pgd_blind = aa[:1].repeat(len(eps), 1)  # a PGD that found nothing: every image AutoAttack broke qualifies
    examples = broken_examples(model, x, y, pgd_blind, aa, norm="linf", eps_list=eps, clip=None, num_classes=2,
                               count=3)
    assert len(examples) == 6 and examples.eps == (0.1,) * 3 + (0.3,) * 3
    for j, level in enumerate(examples.eps):
        i = int(examples.index[j])
        assert bool(pgd_blind[eps.index(level), i]) and not bool(aa[eps.index(level), i])
        assert torch.equal(examples.clean[j], x[i]) and int(examples.y[j]) == int(y[i])
        assert float((examples.adversarial[j] - x[i]).abs().max()) <= level * (1 + 1e-4)
        assert float(distance[i]) <= level * (1 + 1e-4)  # only an image within eps of the boundary can break
        assert int(model(examples.adversarial[j : j + 1]).argmax()) == int(examples.prediction[j]) != int(y[i])
    same = broken_examples(model, x, y, aa, aa, norm="linf", eps_list=eps, clip=None, num_classes=2)
    assert len(same) == 0 and same.clean.shape == (0, 2)  # PGD as strong as AutoAttack: nothing to show
    with pytest.raises(ValueError, match=r"\[eps levels, images\]"):
        broken_examples(model, x, y, aa[:2], aa, norm="linf", eps_list=eps, clip=None, num_classes=2)


def test_random_starts_belong_to_the_image_not_to_its_batch():
    from imalib.autoattack import _image_noise

    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    alone: dict[bytes, int] = {}
    together: dict[bytes, int] = {}
    first = _image_noise(x[[4, 1]], "Linf", 7, alone)
    batch = _image_noise(x, "Linf", 7, together)
    assert torch.equal(first, batch[[4, 1]])  # the same start whichever images share the batch
    assert first.abs().max() <= 1 and not torch.equal(batch[0], batch[1])
    again = _image_noise(x[[1]], "Linf", 7, alone)  # a second draw of image 1 (APGD-T's next target class)
    assert not torch.equal(again[0], first[1])
    assert torch.equal(_image_noise(x[[1]], "Linf", 7, {})[0], first[1])  # a fresh count starts over
    assert not torch.equal(_image_noise(x[[1]], "Linf", 8, {})[0], first[1])  # the seed changes it
    gaussian = _image_noise(torch.rand(400, 8, generator=torch.Generator().manual_seed(1)), "L2", 0, {})
    assert abs(float(gaussian.std()) - 1) < 0.05 and float(gaussian.abs().max()) > 2


class Striped(nn.Module):
    """Four classes in thin stripes of the pixel sum, with zero gradient: an attack's outcome is its random starts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1, keepdim=True)
        cell = (total.squeeze(1) * 200).floor().remainder(4).long()
        return nn.functional.one_hot(cell, 4).float() * 5 + 0 * total


@pytest.mark.parametrize("norm, eps", [("linf", [0.0, 0.0005, 0.001]), ("l2", [0.0, 0.001, 0.002])])
def test_the_cascade_gives_the_full_worst_of_both_image_by_image(norm, eps):
    model = Striped()
    x = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    survivors = torch.rand(len(eps), 60, generator=torch.Generator().manual_seed(1)) < 0.6  # a stand-in for PGD
    survivors[0] = True
    pgd = RobustnessResult(eps=tuple(eps), robust=survivors, norm=norm, seconds=0.0)
    full = evaluate_autoattack(model, x, y, norm=norm, eps_list=eps, clip=(0.0, 1.0), num_classes=4, seed=5)
    cascade = evaluate_autoattack(model, x, y, norm=norm, eps_list=eps, clip=(0.0, 1.0), num_classes=4, seed=5,
                                  candidates=survivors)
    assert 0.1 < full.robustness.accuracy[2] < 0.9  # the starts decide: neither all nor none broken
    assert torch.equal(cascade.robustness.robust, worst_case(pgd, full.robustness).robust)
    assert full.attacked[1:] == (60, 60) and cascade.attacked[1:] == tuple(int(v) for v in survivors[1:].sum(dim=1))
    # the images in another order: each keeps its outcome, which the package's one draw per batch does not give
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    outcomes = {}
    for per_image in (True, False):
        whole = evaluate_autoattack(model, x, y, norm=norm, eps_list=eps, clip=(0.0, 1.0), num_classes=4, seed=5,
                                    per_image_starts=per_image).robustness.robust
        shuffled = evaluate_autoattack(model, x[order], y[order], norm=norm, eps_list=eps, clip=(0.0, 1.0),
                                       num_classes=4, seed=5, per_image_starts=per_image).robustness.robust
        outcomes[per_image] = int((shuffled ^ whole[:, order]).sum())
    assert outcomes[True] == 0 and outcomes[False] > 0
    assert full.settings.starts == "per-image"
