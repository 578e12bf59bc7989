"""Moons: scikit-learn's two interleaving half circles (section 3.1)."""

from __future__ import annotations

import torch
from sklearn.datasets import make_moons

from imalib.data.base import ArrayDataset, Splits


def load_moons(
    n_train: int = 20000, n_val: int = 2000, n_test: int = 2000, *, noise: float = 0.1, seed: int = 0
) -> Splits:
    """Draw n_train + n_val + n_test points with ``make_moons(noise, random_state=seed)``.

    The paper uses 20000 / 2000 / 2000 and does not give the noise; the book
    shows how the results move with it. Inputs are unbounded (clip=None).
    """
    total = n_train + n_val + n_test
    points, labels = make_moons(n_samples=total, noise=noise, random_state=seed)
    x = torch.tensor(points, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut1, cut2 = n_train, n_train + n_val
    return Splits(
        train=ArrayDataset(x[:cut1], y[:cut1]),
        val=ArrayDataset(x[cut1:cut2], y[cut1:cut2]),
        test=ArrayDataset(x[cut2:], y[cut2:]),
        clip=None,
        num_classes=2,
        note=f"make_moons(noise={noise}, random_state={seed}); {n_train}/{n_val}/{n_test}",
    )
