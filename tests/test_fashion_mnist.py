"""Fashion-MNIST loader: the real files where staged, and the error paths everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imalib.data.base import DataError, data_root
from imalib.data.fashion_mnist import FILES, load_fashion_mnist

RAW = data_root() / "FashionMNIST" / "raw"
needs_real_files = pytest.mark.skipif(
    not all((RAW / name).is_file() for name in FILES),
    reason=f"the Fashion-MNIST files are not in {RAW} (set $IMALIB_DATA_ROOT to the folder holding FashionMNIST/raw/)",
)


@needs_real_files
def test_real_files_give_the_paper_split() -> None:
    splits = load_fashion_mnist()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.num_classes == 10 and splits.clip == (0.0, 1.0)
    for dataset in (splits.train, splits.val, splits.test):
        assert dataset.x.dtype == torch.uint8 and dataset.x.shape[1:] == (1, 28, 28)
        assert dataset.y.dtype == torch.int64 and set(dataset.y.tolist()) == set(range(10))
    assert int(splits.test.x.max()) > 200  # raw 0..255 pixels, scaled only per batch
    assert 0.0 <= float(splits.test.inputs(torch.arange(8)).min()) and float(splits.test.inputs().max()) <= 1.0


@needs_real_files
def test_real_files_subset() -> None:
    splits = load_fashion_mnist(n_train=100, n_test=50)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 5000, 50)
    assert splits.train.x.shape == (100, 1, 28, 28)
    assert len(set(splits.train.y.tolist())) > 5  # a class-mixed random subset


def test_missing_folder_names_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_fashion_mnist(tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message and str(Path("FashionMNIST") / "raw") in message


def test_corrupt_file_fails_the_md5_check(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        (raw / name).write_bytes(b"not the official file")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz has the wrong md5"):
        load_fashion_mnist(tmp_path)
