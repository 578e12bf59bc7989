"""The SARS-CoV-2 CT-scan dataset (Soares et al. 2020) of section 3.3.

The paper: 1252 CT images positive for COVID-19 and 1230 negative ones, 2482 in
all; per class 200 test and 30 validation images picked at random, the rest
(1022 COVID, 1000 non-COVID) for training; every image resized to 224x224.
The public Kaggle copy (plameneduardo/sarscov2-ctscan-dataset) is expected as

    <data root>/sars_cov2_ct/COVID/*.png       1252 files, label 1
    <data root>/sars_cov2_ct/non-COVID/*.png   1230 files, label 0

Some public copies lack one non-COVID image (1229, see
``<data root>/sars_cov2_ct/PROVENANCE.md``); that is accepted with a warning.
Images are read as grayscale (one channel), resized with bilinear
interpolation and kept as uint8 (N, 1, S, S). The split depends only on the
file names (split seed fixed at 0, never the run seed) and is saved as JSON
beside the images so that every run, and every reader, uses the same one.
Like the paper's random split, it does not group duplicates: the reference
manifest shows Covid (128)/(129) and (134)/(135) are byte-identical pairs, and
with the 1252/1229 file list the seed-0 split puts Covid (128) in training and
Covid (129) in test (one leaked test image out of 400).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imalib.data.base import ArrayDataset, DataError, Splits, data_root, take_first
from imalib.io import write_json

FOLDER = "sars_cov2_ct"
CLASS_FOLDERS = ("non-COVID", "COVID")  # index = label: non-COVID 0, COVID 1
EXPECTED_COVID = 1252
EXPECTED_NON_COVID = (1230, 1229)  # the paper's count first; the others are accepted with a warning
SPLIT_SEED = 0
SPLIT_NAMES = ("train", "val", "test")
SPLIT_FORMAT = "imalib covid split v1"
HOW_TO_GET = (
    "Download the SARS-CoV-2 CT-scan dataset (Soares et al. 2020; Kaggle: plameneduardo/"
    "sarscov2-ctscan-dataset) on a machine with internet and unpack it so that <data root>/sars_cov2_ct/"
    "COVID/ and <data root>/sars_cov2_ct/non-COVID/ hold the PNG files, or point $IMALIB_DATA_ROOT at a "
    "folder that holds sars_cov2_ct/. Where staged, <data root>/sars_cov2_ct/reference_manifest_sha256.tsv "
    "lists the expected files with their sha256."
)
# Pixel modes that PIL turns into 8-bit grayscale without losing range; 16-bit or float images are refused.
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})

Counts = int | Sequence[int]


def _as_counts(counts: Counts) -> tuple[int, ...]:
    return (int(counts),) if isinstance(counts, (int, np.integer)) else tuple(int(c) for c in counts)


def list_images(folder: Path) -> list[str]:
    """The sorted names of the PNG files in ``folder`` (hidden files skipped)."""
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")
    )


def check_count(class_folder: str, found: int, accepted: Counts, base: Path) -> None:
    """Raise DataError unless ``found`` is one of ``accepted``; warn when it is not the first (the paper's) count."""
    counts = _as_counts(accepted)
    if found not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise DataError(
            f"{base / class_folder} holds {found} PNG files, expected {wanted}: the copy is incomplete "
            f"or mixed with other images. {HOW_TO_GET}"
        )
    if found != counts[0]:
        warnings.warn(
            f"{base / class_folder} holds {found} PNG files instead of the paper's {counts[0]}: some public "
            f"copies lack {counts[0] - found} image(s); the missing one(s) simply drop out of the split",
            stacklevel=3,
        )


def compute_split(
    files: Mapping[str, Sequence[str]], n_test_per_class: int, n_val_per_class: int
) -> dict[str, list[str]]:
    """Per class: a seed-0 permutation of the sorted names; the first ``n_test_per_class`` are test, the next
    ``n_val_per_class`` validation, the rest training. Returns sorted relative paths ("COVID/x.png") per split.

    Each class has its own permutation, so one class's count never moves the other class's split.
    """
    split: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for class_folder in CLASS_FOLDERS:
        names = sorted(files[class_folder])
        if len(names) <= n_test_per_class + n_val_per_class:
            raise DataError(
                f"{class_folder} has {len(names)} images, too few for {n_test_per_class} test and "
                f"{n_val_per_class} validation images and a training set"
            )
        order = torch.randperm(len(names), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        picked = [f"{class_folder}/{names[i]}" for i in order]
        cut1, cut2 = n_test_per_class, n_test_per_class + n_val_per_class
        split["test"] += picked[:cut1]
        split["val"] += picked[cut1:cut2]
        split["train"] += picked[cut2:]
    return {name: sorted(paths) for name, paths in split.items()}


def _per_class(paths: Sequence[str]) -> dict[str, int]:
    return {c: sum(p.split("/", 1)[0] == c for p in paths) for c in CLASS_FOLDERS}


def check_saved_split(
    saved: object, present: set[str], n_test_per_class: int, n_val_per_class: int, path: Path
) -> dict[str, list[str]]:
    """Validate a split read from ``path``: it must name every present file exactly once and nothing else,
    with ``n_test_per_class`` / ``n_val_per_class`` test / validation images per class."""
    fix = f"Delete {path} to have the split made again from the files present (or pass another split_file)."
    if not isinstance(saved, dict) or not all(isinstance(saved.get(n), list) for n in SPLIT_NAMES):
        raise DataError(f"{path} is not a split file written by imalib (it needs lists 'train', 'val', 'test'). {fix}")
    split = {name: [str(p) for p in saved[name]] for name in SPLIT_NAMES}
    listed = [p for name in SPLIT_NAMES for p in split[name]]
    if len(listed) != len(set(listed)):
        raise DataError(f"{path} names some files in more than one split. {fix}")
    missing, extra = sorted(present - set(listed)), sorted(set(listed) - present)
    if missing or extra:
        raise DataError(
            f"{path} is stale: it does not name {len(missing)} file(s) present (e.g. {missing[:3]}) and "
            f"names {len(extra)} file(s) not present (e.g. {extra[:3]}). {fix}"
        )
    for name, wanted in (("test", n_test_per_class), ("val", n_val_per_class)):
        sizes = _per_class(split[name])
        if any(size != wanted for size in sizes.values()):
            raise DataError(f"{path} has {sizes} {name} images per class, but {wanted} per class were asked for. {fix}")
    return split


def read_or_make_split(
    path: Path, files: Mapping[str, Sequence[str]], n_test_per_class: int, n_val_per_class: int
) -> dict[str, list[str]]:
    """Reuse the split saved at ``path`` (checked against the files present), else compute and save it.

    When ``path`` cannot be written (a read-only data root) the split is used unsaved, with a warning;
    it is recomputed identically each time, since it depends only on the file names.
    """
    present = {f"{c}/{name}" for c in CLASS_FOLDERS for name in files[c]}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(
                f"{path} cannot be read as JSON ({error}). Delete it to have the split made again."
            ) from None
        return check_saved_split(saved, present, n_test_per_class, n_val_per_class, path)
    split = compute_split(files, n_test_per_class, n_val_per_class)
    record = {
        "format": SPLIT_FORMAT,
        "split_seed": SPLIT_SEED,
        "n_test_per_class": n_test_per_class,
        "n_val_per_class": n_val_per_class,
        **split,
    }
    try:
        write_json(path, record)
    except OSError as error:
        warnings.warn(
            f"could not save the COVID split to {path} ({error}); using it unsaved (it depends only on the "
            f"file names, so it is the same every time). Pass split_file= to save it elsewhere.",
            stacklevel=3,
        )
    return split


def read_image(path: Path, image_size: int) -> np.ndarray:
    """One image as 8-bit grayscale, resized to image_size x image_size with bilinear interpolation."""
    try:
        with Image.open(path) as image:
            if image.mode not in EIGHT_BIT_MODES:
                raise DataError(
                    f"{path} has pixel mode {image.mode!r}; expected an 8-bit image (L, RGB, RGBA, P) as "
                    f"in the public release"
                )
            gray = image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(
            f"{path} cannot be read as an image ({type(error).__name__}: {error}). Replace it with the "
            f"file from the public release. {HOW_TO_GET}"
        ) from None


def load_images(base: Path, paths: Sequence[str], image_size: int) -> ArrayDataset:
    """Read ``paths`` (relative to ``base``) into uint8 (N, 1, S, S) with labels from the class folder."""
    x = np.zeros((len(paths), 1, image_size, image_size), dtype=np.uint8)
    y = np.zeros(len(paths), dtype=np.int64)
    for i, relative in enumerate(paths):
        class_folder = relative.split("/", 1)[0]
        x[i, 0] = read_image(base / relative, image_size)
        y[i] = CLASS_FOLDERS.index(class_folder)
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y))


def subset_paths(paths: Sequence[str], n: int | None, generator_seed: int) -> list[str]:
    """The paths that :func:`take_first` would keep, found before any image is decoded."""
    index = torch.arange(len(paths))
    kept = take_first(ArrayDataset(index, index), n, generator_seed).y
    return [paths[i] for i in kept.tolist()]


def load_covid(
    root: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    image_size: int = 224,
    split_file: str | Path | None = None,
    expected_counts: tuple[Counts, Counts] | None = None,
    n_test_per_class: int = 200,
    n_val_per_class: int = 30,
) -> Splits:
    """The paper's split of the SARS-CoV-2 CT-scan dataset: per class 200 test, 30 validation, rest training.

    Labels: non-COVID 0, COVID 1. Images: grayscale uint8 (N, 1, image_size, image_size), scaled to [0, 1]
    per batch. The split is read from ``split_file`` (default ``<data root>/sars_cov2_ct/split.json``) when it
    exists and names exactly the files present, else made from the sorted file names with seed 0 and saved
    there. ``expected_counts`` = (COVID counts, non-COVID counts) overrides (EXPECTED_COVID,
    EXPECTED_NON_COVID); each is an int or a tuple whose first entry is the full count and whose others are
    accepted with a warning. ``n_train`` / ``n_test`` take random subsets (seeds ``seed`` / 1).
    """
    if image_size < 1 or n_test_per_class < 0 or n_val_per_class < 0:
        raise ValueError(
            f"image_size={image_size} must be positive and n_test_per_class={n_test_per_class}, "
            f"n_val_per_class={n_val_per_class} non-negative"
        )
    root_path = data_root(root)
    base = root_path / FOLDER
    missing = [c for c in CLASS_FOLDERS if not (base / c).is_dir()]
    if missing:
        raise DataError(f"missing the folder(s) {', '.join(missing)} in {base} (data root {root_path}). {HOW_TO_GET}")
    covid_counts, non_covid_counts = expected_counts or (EXPECTED_COVID, EXPECTED_NON_COVID)
    files = {c: list_images(base / c) for c in CLASS_FOLDERS}
    check_count("COVID", len(files["COVID"]), covid_counts, base)
    check_count("non-COVID", len(files["non-COVID"]), non_covid_counts, base)
    path = Path(split_file) if split_file is not None else base / "split.json"
    split = read_or_make_split(path, files, n_test_per_class, n_val_per_class)
    train_paths = subset_paths(split["train"], n_train, seed)
    test_paths = subset_paths(split["test"], n_test, 1)
    train, val, test = (load_images(base, paths, image_size) for paths in (train_paths, split["val"], test_paths))
    return Splits(
        train=train,
        val=val,
        test=test,
        clip=(0.0, 1.0),
        num_classes=2,
        note=f"SARS-CoV-2 CT ({len(files['COVID'])} COVID, {len(files['non-COVID'])} non-COVID), grayscale "
        f"{image_size}x{image_size}, split {path}; train {len(train)}, val {len(val)}, test {len(test)}",
    )
