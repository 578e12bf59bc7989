"""SVHN from the two official MATLAB files ``train_32x32.mat`` and ``test_32x32.mat`` (section 3.2).

The paper trains on SVHN's 32x32 colour digits (73257 training and 26032 test
images, no "extra" set, no data augmentation) with the same settings as
Fashion-MNIST. It does not say how it picked a validation set; like the
Fashion-MNIST loader we hold out the last ``n_val`` training images after a
fixed permutation (seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imalib.data.base import ArrayDataset, DataError, Splits, data_root, take_first
from imalib.data.checksums import require_files

FOLDER = "SVHN"
TRAIN_FILE = "train_32x32.mat"
TEST_FILE = "test_32x32.mat"
# The official md5s, as torchvision.datasets.SVHN.split_list lists them.
FILES = {
    TRAIN_FILE: "e26dedcc434d2e4c54c9b2d4a06d8373",
    TEST_FILE: "eb5a983be6a315427106f1b164d9cef3",
}
HOW_TO_GET = (
    "Put the official files train_32x32.mat and test_32x32.mat (http://ufldl.stanford.edu/housenumbers/) "
    "in <data root>/SVHN/ (on a machine with internet: torchvision.datasets.SVHN('<data root>/SVHN', "
    "split='train', download=True), and again with split='test'), or point $IMALIB_DATA_ROOT at a folder "
    "that holds SVHN/."
)
ZERO_LABEL = 10  # SVHN's label for the digit 0


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The raw ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) arrays of one official .mat file."""
    from scipy.io import loadmat

    try:
        content = loadmat(path, variable_names=("X", "y"))
    except Exception as error:  # noqa: BLE001 - every unreadable file gets the same advice
        raise DataError(
            f"{path} cannot be read as a MATLAB v5 file ({type(error).__name__}: {error}). "
            f"Delete it and fetch it again. {HOW_TO_GET}"
        ) from None
    if "X" not in content or "y" not in content:
        raise DataError(f"{path} lacks the variables 'X' and 'y' of the official SVHN files. {HOW_TO_GET}")
    return content["X"], content["y"]


def _to_tensors(images: np.ndarray, labels: np.ndarray, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(32, 32, 3, N) [height, width, channel, sample] uint8 and labels 1..10 -> (N, 3, 32, 32) uint8 and 0..9."""
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: 'X' has shape {images.shape}, expected (32, 32, 3, N) as in the official files")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'X' has dtype {images.dtype}, expected uint8 as in the official files")
    count = images.shape[3]
    flat = np.asarray(labels).reshape(-1)
    if flat.shape[0] != count:
        raise DataError(f"{path}: {count} images but {flat.shape[0]} labels")
    if count and (flat.min() < 1 or flat.max() > ZERO_LABEL):
        raise DataError(f"{path}: labels range over {flat.min()}..{flat.max()}, expected 1..10 (10 = digit 0)")
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1)))
    y = torch.from_numpy(flat.astype(np.int64))
    y[y == ZERO_LABEL] = 0
    return x, y


def load_split_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One official SVHN .mat file as uint8 images (N, 3, 32, 32) and labels 0..9 (digit 0 is label 0)."""
    images, labels = _read_mat(path)
    return _to_tensors(images, labels, path)


def load_svhn(
    root: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    n_val: int = 5000,
    seed: int = 0,
    check_md5: bool = True,
) -> Splits:
    """Read and md5-check the official files; split 68257 train / 5000 validation / 26032 test.

    The validation set is the last ``n_val`` images of the official training set
    after a fixed permutation (seed 0), so it never changes with the run seed.
    ``n_train`` / ``n_test`` take random class-mixed subsets for reduced profiles.
    Images are kept as uint8 (N, 3, 32, 32) and scaled to [0, 1] per batch.
    ``check_md5=False`` skips the checksums (for generated test files only).
    """
    folder = data_root(root) / FOLDER
    require_files(folder, {name: (checksum if check_md5 else None) for name, checksum in FILES.items()}, HOW_TO_GET)
    x, y = load_split_file(folder / TRAIN_FILE)
    if not 0 <= n_val < len(y):
        raise ValueError(f"n_val={n_val} must be at least 0 and less than the {len(y)} training images")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = len(y) - n_val
    full_train = ArrayDataset(x[order[:cut]], y[order[:cut]])
    val = ArrayDataset(x[order[cut:]], y[order[cut:]])
    del x, y
    full_test = ArrayDataset(*load_split_file(folder / TEST_FILE))
    train, test = take_first(full_train, n_train, seed), take_first(full_test, n_test, 1)
    return Splits(
        train=train,
        val=val,
        test=test,
        clip=(0.0, 1.0),
        num_classes=10,
        note=f"SVHN official files{'' if check_md5 else ' (md5 not checked)'}; "
        f"train {len(train)}, val {len(val)}, test {len(test)}",
    )
