"""Algorithm 2's margin update, branch by branch, and the store's indexing."""

from __future__ import annotations

import pytest
import torch

from imalib.margins import MarginStore


def test_initialised_to_delta():
    store = MarginStore(5, delta=0.01, eps_max=0.3)
    assert torch.allclose(store.values, torch.full((5,), 0.01))


def test_each_branch_of_algorithm_2():
    store = MarginStore(5, delta=0.1, eps_max=1.0)
    store.values[:] = torch.tensor([0.5, 0.5, 0.5, 0.95, 0.5])
    idx = torch.tensor([0, 1, 2, 3, 4])
    correct = torch.tensor([False, True, True, True, True])
    found = torch.tensor([True, True, False, False, True])
    distance = torch.tensor([0.4, 0.3, 0.0, 0.0, 0.02])
    store.algorithm2_update(idx, correct, found, distance)
    expected = torch.tensor([
        0.1,   # wrong -> Delta (re-initialise), whatever BPGD said
        0.3,   # correct, boundary found -> its distance (refine/shrink)
        0.6,   # correct, not found -> E + Delta (expand)
        1.0,   # expand past eps_max -> clipped to eps_max
        0.1,   # found at a distance below Delta -> clipped up to Delta
    ])
    assert torch.allclose(store.values, expected)


def test_update_follows_dataset_index_not_batch_position():
    store = MarginStore(6, delta=0.1, eps_max=1.0)
    idx = torch.tensor([4, 1, 5])
    store.algorithm2_update(idx, torch.tensor([True, True, True]), torch.tensor([True, True, True]),
                            torch.tensor([0.44, 0.11, 0.55]))
    assert torch.allclose(store.values, torch.tensor([0.1, 0.11, 0.1, 0.1, 0.44, 0.55]))
    assert torch.allclose(store.get(torch.tensor([5, 4])), torch.tensor([0.55, 0.44]))


def test_state_round_trip_and_mismatch():
    store = MarginStore(4, delta=0.1, eps_max=1.0)
    store.values[2] = 0.7
    other = MarginStore(4, delta=0.1, eps_max=1.0)
    other.load_state_dict(store.state_dict())
    assert torch.equal(other.values, store.values)
    with pytest.raises(ValueError, match="another dataset size"):
        MarginStore(3, delta=0.1, eps_max=1.0).load_state_dict(store.state_dict())


def test_histogram_counts_every_sample():
    store = MarginStore(10, delta=0.1, eps_max=1.0)
    store.values[:] = torch.linspace(0.1, 1.0, 10)
    counts, edges = store.histogram(bins=5)
    assert int(counts.sum()) == 10 and edges.numel() == 6


@pytest.mark.parametrize("delta,eps_max", [(0.0, 1.0), (0.5, 0.3)])
def test_bad_delta_rejected(delta, eps_max):
    with pytest.raises(ValueError):
        MarginStore(3, delta=delta, eps_max=eps_max)
