"""In-memory datasets that yield (x, y, idx), and the data root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from imalib.errors import DataError  # re-exported: the loaders import it from here
from imalib.norms import Clip

DATA_ROOT_ENV = "IMALIB_DATA_ROOT"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else $IMALIB_DATA_ROOT, else ``data/``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


@dataclass
class ArrayDataset:
    """A labelled dataset held as two tensors; sample i has dataset index i.

    ``x`` may be stored as uint8 (images) and is converted to float in [0, 1]
    batch by batch, which keeps SVHN and CT images small in memory.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def inputs(self, idx: Tensor | None = None) -> Tensor:
        x = self.x if idx is None else self.x[idx]
        return x.float() / 255.0 if x.dtype == torch.uint8 else x

    def batch(self, idx: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Inputs, labels and dataset indices of the samples ``idx``, all three on ``device``.

        The indices travel too: the methods index them with masks computed from
        the logits (``idx[correct]``), which PyTorch refuses across devices.
        """
        return self.inputs(idx).to(device), self.y[idx].to(device), idx.to(device)

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The (x, y, idx) batches of one epoch; shuffled when ``generator`` is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], device)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def ordered_batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self.batches(batch_size, device=device)

    def subset(self, idx: Tensor) -> ArrayDataset:
        return ArrayDataset(self.x[idx], self.y[idx])


@dataclass
class Splits:
    """Train / validation / test sets and what the attacks need to know about them."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    clip: Clip
    num_classes: int
    note: str = ""


def take_first(dataset: ArrayDataset, n: int | None, generator_seed: int) -> ArrayDataset:
    """A class-mixed random subset of size n (all of it when n is None or too large)."""
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(generator_seed))
    return dataset.subset(order[:n].sort().values)
