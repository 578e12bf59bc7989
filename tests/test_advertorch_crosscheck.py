"""Our PGD is never weaker than advertorch's PGDAttack, the library the paper evaluated with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import trained_moons_model
from imalib.compat_advertorch import import_advertorch_attacks, zero_gradients
from imalib.evaluate import evaluate_robustness, predict

BOX = (-10.0, 10.0)  # Moons is unbounded; advertorch needs a box, so both sides get the same loose one


def test_compat_restores_zero_gradients():
    t = torch.ones(3, requires_grad=True)
    (t * 2).sum().backward()
    zero_gradients([t])
    assert torch.equal(t.grad, torch.zeros(3))
    attacks = import_advertorch_attacks()
    assert hasattr(attacks, "PGDAttack") and hasattr(attacks.utils, "MarginalLoss")


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_robust_accuracy_no_higher_than_advertorch(eps):
    model, x, y = trained_moons_model()
    attacks = import_advertorch_attacks()
    torch.manual_seed(0)
    clean = predict(model, x) == y
    alive = clean.clone()
    for loss in (nn.CrossEntropyLoss(reduction="sum"), attacks.utils.MarginalLoss(reduction="sum")):
        attack = attacks.PGDAttack(model, loss_fn=loss, eps=eps, nb_iter=100, eps_iter=eps / 10, rand_init=True,
                                   clip_min=BOX[0], clip_max=BOX[1], ord=np.inf)
        alive &= predict(model, attack.perturb(x, y)) == y
    theirs = float(alive.float().mean())
    for fast in (True, False):
        ours = evaluate_robustness(model, x, y, norm="linf", eps_list=[eps], clip=BOX, batch_size=len(x),
                                   fast=fast).accuracy[0]
        assert ours <= theirs + 0.01, (fast, ours, theirs)
    assert theirs < float(clean.float().mean())  # the attack does something at this eps
