"""Datasets of section 3, read from one data root ($IMALIB_DATA_ROOT or a parameter, default ``data/``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imalib.data.base import DATA_ROOT_ENV, ArrayDataset, DataError, Splits, data_root
from imalib.data.fashion_mnist import load_fashion_mnist
from imalib.data.moons import load_moons


def load_splits(
    dataset: str,
    *,
    root: str | Path | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Splits:
    """Load ``dataset``'s train / validation / test splits, reduced to n_train / n_test if given."""
    params = dict(params or {})
    if dataset == "moons":
        return load_moons(n_train or 20000, params.pop("n_val", 2000), n_test or 2000, seed=seed, **params)
    if dataset == "fashion_mnist":
        return load_fashion_mnist(root, n_train=n_train, n_test=n_test, seed=seed, **params)
    if dataset == "svhn":
        from imalib.data.svhn import load_svhn

        return load_svhn(root, n_train=n_train, n_test=n_test, seed=seed, **params)
    if dataset == "covid":
        from imalib.data.covid import load_covid

        if "expected_counts" in params:  # JSON turns the tuples of a stored configuration into lists
            params["expected_counts"] = tuple(tuple(c) if isinstance(c, list) else c for c in params["expected_counts"])
        return load_covid(root, n_train=n_train, n_test=n_test, seed=seed, **params)
    raise DataError(f"dataset={dataset!r} is not supported: use one of moons, fashion_mnist, svhn, covid")


__all__ = ["DATA_ROOT_ENV", "ArrayDataset", "DataError", "Splits", "data_root", "load_splits"]
