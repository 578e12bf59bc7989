"""Small models and data shared by the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # small models: one thread beats two, and never oversubscribes a busy machine

# The longest tests, longest first (measured with `pytest --durations`): they are marked `slow` (they still run in
# `make test` and CI; `-m "not slow"` skips them for a quick local loop) and collected first, so that pytest-xdist
# deals them out to its workers at the start, alternately, instead of leaving one of them for the end.
LONGEST_FIRST = (
    "test_covid_on_generated_files",
    "test_fashion_mnist_smoke",
    "test_svhn_on_generated_files",
    "test_moons_smoke",
    "test_reproducing",
    "test_method_and_equilibrium",
    "test_killed_run_leaves_complete_files_and_resumes",
    "test_python_dash_m",
)
SLOW_MODULES = ("test_notebooks.py",)  # every test there executes a notebook end to end


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}

    def position(item: pytest.Item) -> int:
        return rank.get(item.originalname if isinstance(item, pytest.Function) else item.name, len(rank))

    for item in items:
        if position(item) < len(rank) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    items.sort(key=position)  # stable: the others keep their order


class Linear2(nn.Module):
    """A two-class linear model: logit difference z_1 - z_0 = w . x + b."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.linear = nn.Linear(w.numel(), 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            self.linear.weight[1] = w.flatten()
            self.linear.bias[1] = b

    @property
    def w(self) -> torch.Tensor:
        return self.linear.weight[1].detach()

    @property
    def b(self) -> float:
        return float(self.linear.bias[1].detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture
def linear_model() -> Linear2:
    generator = torch.Generator().manual_seed(3)
    return Linear2(torch.randn(2, generator=generator), 0.1)


@pytest.fixture
def image_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 8, 8, generator=generator), torch.randint(0, 3, (6,), generator=generator)


def trained_moons_model(seed: int = 0, epochs: int = 6):
    """A quickly trained Moons MLP (ce) and its test set, for cross-checks."""
    from imalib.data.moons import load_moons
    from imalib.methods import CE
    from imalib.models import moons_mlp
    from imalib.train import fit, make_optimizer

    splits = load_moons(2000, 10, 400, noise=0.1, seed=seed)
    torch.manual_seed(seed)
    model = moons_mlp()
    fit(
        model,
        CE(),
        splits.train,
        epochs=epochs,
        batch_size=64,
        optimizer=make_optimizer(model, "adam", 1e-2, 0.0),
        seed=seed,
        clip=None,
        progress=False,
    )
    model.eval()
    return model, splits.test.inputs(), splits.test.y
