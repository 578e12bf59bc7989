"""The evaluation protocol: worst case per sample, clean errors count everywhere, envelope and rise flags."""

from __future__ import annotations

import torch

from imalib.evaluate import RobustnessResult, evaluate_robustness

EPS = [0.0, 0.1, 0.2, 0.4]


def exact_distance(model, x):
    return (x @ model.w + model.b).abs() / model.w.norm(p=1)


def test_linear_model_accuracy_is_bracketed_by_the_exact_answer(linear_model):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(500, 2, generator=generator) * 0.6
    y = linear_model(x).argmax(dim=1)
    y[:25] = 1 - y[:25]  # 5% wrong on clean data: wrong at every eps, never attacked into "right"
    result = evaluate_robustness(linear_model, x, y, norm="linf", eps_list=EPS, clip=None, batch_size=128)
    distance = exact_distance(linear_model, x)
    assert not result.robust[:, :25].any()
    assert abs(result.accuracy[0] - 0.95) < 1e-6
    for k, eps in enumerate(EPS[1:], start=1):
        lower = float(((distance > eps) & (torch.arange(500) >= 25)).float().mean())
        upper = float(((distance > 0.95 * eps) & (torch.arange(500) >= 25)).float().mean())
        assert lower <= result.accuracy[k] <= upper


def test_fast_and_paper_modes_agree_on_a_linear_model(linear_model):
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(5)) * 0.6
    y = linear_model(x).argmax(dim=1)
    fast = evaluate_robustness(linear_model, x, y, norm="l2", eps_list=EPS, clip=None, fast=True)
    slow = evaluate_robustness(linear_model, x, y, norm="l2", eps_list=EPS, clip=None, fast=False)
    assert fast.accuracy == slow.accuracy


def test_envelope_and_rises():
    robust = torch.tensor([[True, True, True, False],
                           [False, True, True, False],   # sample 0 broken at eps 1 ...
                           [True, True, False, False]])  # ... "survives" eps 2: PGD failed where it succeeded before
    result = RobustnessResult(eps=(0.0, 0.1, 0.2), robust=robust, norm="linf", seconds=0.0)
    assert result.accuracy == [0.75, 0.5, 0.5]
    assert result.envelope == [0.75, 0.5, 0.25]
    rising = RobustnessResult(eps=(0.0, 0.1, 0.2), robust=torch.tensor([[True, True], [False, False], [True, False]]),
                              norm="linf", seconds=0.0)
    assert rising.rises == [False, False, True]
    frame = rising.to_frame(method="x")
    assert list(frame.columns) == ["method", "eps", "accuracy", "envelope", "rises"]
