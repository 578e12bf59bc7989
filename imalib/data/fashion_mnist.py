"""Fashion-MNIST from the four official IDX files (section 3.2)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from imalib.data.base import ArrayDataset, DataError, Splits, data_root, take_first
from imalib.data.checksums import require_files

FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
HOW_TO_GET = (
    "Put the four official files in <data root>/FashionMNIST/raw/ (on a machine with internet: "
    "torchvision.datasets.FashionMNIST(<data root>, download=True)), or point $IMALIB_DATA_ROOT at a "
    "folder that holds FashionMNIST/raw/."
)


def _read_idx(path: Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {found}, expected {magic})")
    dims = raw[3]
    sizes = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    if tuple(sizes[1:]) != shape_tail:
        raise DataError(f"{path} holds items of shape {tuple(sizes[1:])}, expected {shape_tail}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    return data.reshape(sizes)


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    n_val: int = 5000,
    seed: int = 0,
) -> Splits:
    """Read and md5-check the official files; split 55000 train / 5000 validation / 10000 test.

    The validation set is the last ``n_val`` images of the official training set
    after a fixed permutation (seed 0), so it never changes with the run seed.
    ``n_train`` / ``n_test`` take random class-mixed subsets for reduced profiles.
    Images are kept as uint8 (N, 1, 28, 28) and scaled to [0, 1] per batch.
    """
    folder = data_root(root) / "FashionMNIST" / "raw"
    require_files(folder, dict(FILES), HOW_TO_GET)
    train_x = _read_idx(folder / "train-images-idx3-ubyte.gz", 2051, (28, 28))
    train_y = _read_idx(folder / "train-labels-idx1-ubyte.gz", 2049, ())
    test_x = _read_idx(folder / "t10k-images-idx3-ubyte.gz", 2051, (28, 28))
    test_y = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049, ())
    x = torch.from_numpy(train_x.copy()).unsqueeze(1)
    y = torch.from_numpy(train_y.astype(np.int64))
    if not 0 <= n_val < len(y):
        raise ValueError(f"n_val={n_val} must lie in [0, {len(y)})")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = len(y) - n_val  # (order[:-0] would be empty)
    full_train = ArrayDataset(x[order[:cut]], y[order[:cut]])
    val = ArrayDataset(x[order[cut:]], y[order[cut:]])
    test = ArrayDataset(torch.from_numpy(test_x.copy()).unsqueeze(1), torch.from_numpy(test_y.astype(np.int64)))
    return Splits(
        train=take_first(full_train, n_train, seed),
        val=val,
        test=take_first(test, n_test, 1),
        clip=(0.0, 1.0),
        num_classes=10,
        note=f"Fashion-MNIST official files; train {n_train or len(full_train)}, val {n_val}, "
        f"test {n_test or len(test)}",
    )
