"""SVHN and COVID-19 CT loaders on small generated files in the real formats, and the white-noise test."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat
from torch import nn

from imalib.data.base import DataError
from imalib.data.covid import load_covid
from imalib.data.svhn import load_svhn
from imalib.noise import white_noise_error_rate

# --------------------------------------------------------------------------- SVHN


def write_svhn_mat(path: Path, labels: list[int], seed: int) -> np.ndarray:
    """An official-layout file: X (32, 32, 3, N) uint8 [height, width, channel, sample], y (N, 1) in 1..10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": images, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
    return images


@pytest.fixture
def svhn_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    train_labels = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 3]
    test_labels = [10, 1, 5, 10, 7]
    train = write_svhn_mat(tmp_path / "SVHN" / "train_32x32.mat", train_labels, 0)
    test = write_svhn_mat(tmp_path / "SVHN" / "test_32x32.mat", test_labels, 1)
    return tmp_path, train, test


def test_svhn_shapes_labels_and_pixel_order(svhn_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, test_images = svhn_root
    # a known value at a known place: height 3, width 17, channel 2 of test sample 4 (asymmetric on purpose)
    test_images[:, :, :, 4] = 0
    test_images[3, 17, 2, 4] = 201
    savemat(root / "SVHN" / "test_32x32.mat", {"X": test_images, "y": np.array([[10], [1], [5], [10], [7]])})
    splits = load_svhn(root, n_val=3, check_md5=False)
    assert splits.test.x.shape == (5, 3, 32, 32) and splits.test.x.dtype == torch.uint8
    assert splits.test.y.tolist() == [0, 1, 5, 0, 7]
    assert splits.test.x[4, 2, 3, 17] == 201 and int(splits.test.x[4].sum()) == 201
    assert len(splits.train) == 9 and len(splits.val) == 3
    assert splits.train.x.shape[1:] == (3, 32, 32) and splits.train.y.dtype == torch.int64
    assert splits.num_classes == 10 and splits.clip == (0.0, 1.0)
    assert 10 not in splits.train.y.tolist() + splits.val.y.tolist()


def test_svhn_validation_is_a_fixed_part_of_train(svhn_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, train_images, _ = svhn_root
    expected = torch.from_numpy(np.ascontiguousarray(train_images.transpose(3, 2, 0, 1)))
    one = load_svhn(root, n_val=3, seed=0, check_md5=False)
    two = load_svhn(root, n_val=3, seed=7, check_md5=False)
    assert torch.equal(one.val.x, two.val.x)  # the run seed never moves the validation set
    rows = {bytes(img.numpy()) for img in torch.cat([one.train.x, one.val.x])}
    assert rows == {bytes(img.numpy()) for img in expected}  # train + val is the official training set
    assert not {bytes(i.numpy()) for i in one.train.x} & {bytes(i.numpy()) for i in one.val.x}
    small = load_svhn(root, n_train=4, n_test=2, n_val=3, check_md5=False)
    assert len(small.train) == 4 and len(small.test) == 2


def test_svhn_md5_is_checked_by_default(svhn_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = svhn_root
    with pytest.raises(DataError, match="wrong md5"):
        load_svhn(root, n_val=3)


def test_svhn_missing_files_name_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_svhn(tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message and "train_32x32.mat" in message and "test_32x32.mat" in message
    assert "IMALIB_DATA_ROOT" in message


def test_svhn_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "SVHN").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "SVHN" / name).write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="MATLAB"):
        load_svhn(tmp_path, check_md5=False)


# --------------------------------------------------------------------------- COVID-19 CT

SIZES = [(20, 30), (17, 11), (8, 8), (40, 25)]
MODES = ["RGB", "L", "RGBA", "P"]


def gray_value(label: int, i: int) -> int:
    """A value unique to each file, so a loaded image tells which file it came from."""
    return 10 + 100 * label + 5 * i


def write_png(path: Path, value: int, size: tuple[int, int], mode: str) -> None:
    """A solid gray image: every mode converts back to exactly ``value`` in grayscale."""
    image = Image.new("L", size, value)
    image = image.convert(mode) if mode != "P" else image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(path)


def make_covid_tree(root: Path, n_covid: int = 12, n_non_covid: int = 10) -> dict[int, str]:
    """The Kaggle layout with tiny images of various sizes and modes; returns gray value -> relative path."""
    values = {}
    for label, folder, count, stem in ((1, "COVID", n_covid, "Covid"), (0, "non-COVID", n_non_covid, "Non-Covid")):
        (root / "sars_cov2_ct" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{stem} ({i + 1}).png"
            write_png(root / "sars_cov2_ct" / folder / name, gray_value(label, i), SIZES[i % 4], MODES[i % 4])
            values[gray_value(label, i)] = f"{folder}/{name}"
    return values


SMALL = {"expected_counts": (12, (10,)), "n_test_per_class": 2, "n_val_per_class": 1}


def names_of(dataset, values: dict[int, str]) -> list[str]:
    """The file behind each image, from its (constant) gray value."""
    names = []
    for image in dataset.x:
        assert int(image.min()) == int(image.max()), "a solid image must stay solid"
        names.append(values[int(image[0, 0, 0])])
    return names


def test_covid_images_labels_and_sizes(tmp_path: Path) -> None:
    values = make_covid_tree(tmp_path)
    splits = load_covid(tmp_path, image_size=16, **SMALL)
    assert splits.num_classes == 2 and splits.clip == (0.0, 1.0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 2, 4)
    for dataset in (splits.train, splits.val, splits.test):
        assert dataset.x.dtype == torch.uint8 and dataset.x.shape[1:] == (1, 16, 16)
        for name, label in zip(names_of(dataset, values), dataset.y.tolist()):
            assert label == (1 if name.startswith("COVID/") else 0)
    assert load_covid(tmp_path, image_size=9, **SMALL).test.x.shape == (4, 1, 9, 9)


def test_covid_split_is_deterministic_disjoint_and_per_class(tmp_path: Path) -> None:
    values = make_covid_tree(tmp_path / "a")
    make_covid_tree(tmp_path / "b")
    one = load_covid(tmp_path / "a", image_size=8, seed=0, **SMALL)
    two = load_covid(tmp_path / "b", image_size=8, seed=5, **SMALL)  # fresh tree, other run seed
    parts = {}
    for name in ("train", "val", "test"):
        first, second = names_of(getattr(one, name), values), names_of(getattr(two, name), values)
        assert first == second
        parts[name] = set(first)
    assert parts["train"] | parts["val"] | parts["test"] == set(values.values())
    assert sum(map(len, parts.values())) == len(values)
    for name, per_class in (("test", 2), ("val", 1)):
        assert sum(p.startswith("COVID/") for p in parts[name]) == per_class
        assert sum(p.startswith("non-COVID/") for p in parts[name]) == per_class
    saved = json.loads((tmp_path / "a" / "sars_cov2_ct" / "split.json").read_text())
    assert {name: set(saved[name]) for name in ("train", "val", "test")} == parts


def test_covid_split_file_is_reused(tmp_path: Path) -> None:
    values = make_covid_tree(tmp_path)
    split_file = tmp_path / "my_split.json"
    load_covid(tmp_path, image_size=8, split_file=split_file, **SMALL)
    assert not (tmp_path / "sars_cov2_ct" / "split.json").exists()
    saved = json.loads(split_file.read_text())
    # swap one COVID training file with one COVID test file: a valid split that only a reader of the file would use
    train_one = next(p for p in saved["train"] if p.startswith("COVID/"))
    test_one = next(p for p in saved["test"] if p.startswith("COVID/"))
    saved["train"] = [test_one if p == train_one else p for p in saved["train"]]
    saved["test"] = [train_one if p == test_one else p for p in saved["test"]]
    split_file.write_text(json.dumps(saved))
    splits = load_covid(tmp_path, image_size=8, split_file=split_file, **SMALL)
    assert train_one in names_of(splits.test, values) and test_one in names_of(splits.train, values)


def test_covid_stale_split_file_is_rejected(tmp_path: Path) -> None:
    make_covid_tree(tmp_path)
    load_covid(tmp_path, image_size=8, **SMALL)
    folder = tmp_path / "sars_cov2_ct" / "COVID"
    (folder / "Covid (1).png").rename(folder / "Covid (99).png")  # same count, other file
    with pytest.raises(DataError, match=r"stale.*Delete .*split\.json"):
        load_covid(tmp_path, image_size=8, **SMALL)
    (tmp_path / "sars_cov2_ct" / "split.json").unlink()
    load_covid(tmp_path, image_size=8, **SMALL)  # made again from the files present
    with pytest.raises(DataError, match="per class"):
        load_covid(tmp_path, image_size=8, expected_counts=(12, (10,)), n_test_per_class=3, n_val_per_class=1)


def test_covid_counts(tmp_path: Path) -> None:
    make_covid_tree(tmp_path, n_covid=12, n_non_covid=9)
    with pytest.warns(UserWarning, match="lack 1 image"):
        splits = load_covid(tmp_path, image_size=8, expected_counts=(12, (10, 9)), n_test_per_class=2,
                            n_val_per_class=1)
    assert len(splits.train) == 9 + 6
    with pytest.raises(DataError, match=r"holds 9 PNG files, expected 10"):
        load_covid(tmp_path, image_size=8, **SMALL)
    with pytest.raises(DataError, match=r"COVID holds 12 PNG files, expected 13"):
        load_covid(tmp_path, image_size=8, expected_counts=(13, (9,)))
    with pytest.raises(DataError, match=r"expected 1252"):
        load_covid(tmp_path, image_size=8)  # the real counts by default


def test_covid_exact_count_gives_no_warning(tmp_path: Path) -> None:
    make_covid_tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_covid(tmp_path, image_size=8, expected_counts=(12, (10, 9)), n_test_per_class=2, n_val_per_class=1)


def test_covid_subsets(tmp_path: Path) -> None:
    make_covid_tree(tmp_path)
    splits = load_covid(tmp_path, image_size=8, n_train=5, n_test=3, **SMALL)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 2, 3)


def test_covid_missing_folder_names_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_covid(tmp_path / "empty")
    message = str(caught.value)
    assert str(tmp_path / "empty") in message and "non-COVID" in message and "Kaggle" in message


def test_covid_unwritable_split_location_warns(tmp_path: Path) -> None:
    make_covid_tree(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not save the COVID split"):
        splits = load_covid(tmp_path, image_size=8, split_file=blocker / "split.json", **SMALL)
    assert len(splits.test) == 4


def test_covid_broken_png_is_a_data_error(tmp_path: Path) -> None:
    make_covid_tree(tmp_path)
    (tmp_path / "sars_cov2_ct" / "COVID" / "Covid (3).png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"Covid \(3\)\.png cannot be read"):
        load_covid(tmp_path, image_size=8, **SMALL)


# --------------------------------------------------------------------------- white noise (Appendix B)


class Constant(nn.Module):
    """Always predicts class ``label`` (two classes)."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))
        with torch.no_grad():
            self.bias[label] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 2)


class MeanThreshold(nn.Module):
    """Class 1 when the mean pixel exceeds ``threshold``, else class 0."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(dim=1) - self.threshold
        return torch.stack([-score, score], dim=1)


class MaxAboveOne(nn.Module):
    """Class 1 when any pixel exceeds 1 (outside the box), else class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x.flatten(1).amax(dim=1) > 1.0).float() + self.dummy
        return torch.stack([-score, score], dim=1)


def test_noise_level_zero_is_the_clean_error(image_model: nn.Module,
                                             images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    image_model.train()
    with torch.no_grad():
        clean = float((image_model.eval()(x).argmax(1) != y).float().mean())
    image_model.train()
    assert white_noise_error_rate(image_model, x, y, level=0.0, repeats=2, batch_size=4) == pytest.approx(clean)
    assert image_model.training  # mode restored


def test_noise_constant_model_gives_its_error_rate() -> None:
    y = torch.tensor([0, 1, 1, 0, 1, 1, 1, 0])
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert white_noise_error_rate(Constant(1), x, y, level=0.3, repeats=3, batch_size=3) == 3 / 8
    assert white_noise_error_rate(Constant(0), x, y, level=0.3) == 5 / 8


def test_noise_flips_a_model_near_its_boundary() -> None:
    x = torch.full((50, 1, 8, 8), 0.5)
    y = torch.zeros(50, dtype=torch.long)
    model = MeanThreshold(0.5 + 1e-3)  # the clean mean is just below the threshold
    assert white_noise_error_rate(model, x, y, level=0.0) == 0.0
    rate = white_noise_error_rate(model, x, y, level=0.05, repeats=2, seed=3)
    assert 0.0 < rate < 1.0
    assert rate == white_noise_error_rate(model, x, y, level=0.05, repeats=2, seed=3)  # seeded
    assert white_noise_error_rate(model, (x * 255).to(torch.uint8), y, level=0.0) == 0.0  # 127/255 < threshold


def test_noise_is_clamped_to_the_box() -> None:
    x = torch.ones(20, 1, 4, 4)
    y = torch.zeros(20, dtype=torch.long)
    assert white_noise_error_rate(MaxAboveOne(), x, y, level=0.05) == 0.0
    assert white_noise_error_rate(MaxAboveOne(), x, y, level=0.05, clip=None) == 1.0


def test_noise_rejects_bad_arguments() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError):
        white_noise_error_rate(Constant(0), x, y, level=-0.1)
    with pytest.raises(ValueError):
        white_noise_error_rate(Constant(0), x, y[:3])
