"""The three scales every experiment runs at: smoke, cpu and paper, and the run configurations of a table.

``paper`` is the paper's protocol (for Fashion-MNIST, SVHN and COVID-19 a GPU
job); ``cpu`` is what a 2-core laptop finishes in minutes per method, smaller
and labelled so; ``smoke`` takes seconds and exists for tests and CI. For Moons
the paper's protocol is cheap, so ``cpu`` equals ``paper`` there. The rows,
noise levels and optimisers of each table come from :mod:`imalib.paper`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imalib.config import PROFILES, ConfigError, RunConfig
from imalib.paper import TABLES


@dataclass(frozen=True)
class Scale:
    """The size of one profile for one dataset.

    ``autoattack`` says whether a run's evaluation adds AutoAttack after the
    paper's PGD (:func:`imalib.runs.evaluate_run`). It is a property of the
    profile, not of the run configuration, so that it changes no run's hash.
    """

    epochs: int
    batch_size: int
    n_train: int | None
    n_test: int | None
    eval_steps: int
    eval_batch: int
    autoattack: bool = False


SCALES: dict[tuple[str, str], Scale] = {
    ("moons", "paper"): Scale(30, 128, 20000, 2000, 100, 2000),
    ("moons", "cpu"): Scale(30, 128, 20000, 2000, 100, 2000),
    ("moons", "smoke"): Scale(3, 128, 1000, 200, 10, 200),
    ("fashion_mnist", "paper"): Scale(60, 128, None, None, 100, 1000, autoattack=True),
    ("fashion_mnist", "cpu"): Scale(5, 128, 2000, 300, 100, 300, autoattack=True),
    ("fashion_mnist", "smoke"): Scale(1, 32, 64, 32, 5, 32),
    ("svhn", "paper"): Scale(60, 128, None, None, 100, 1000, autoattack=True),
    # The SVHN CNN runs about as fast as the Fashion-MNIST one here (about 470 input-gradient passes of 128
    # images per second with one thread, both), so its cpu profile has the same scale: 10-30 minutes a row.
    ("svhn", "cpu"): Scale(5, 128, 2000, 300, 100, 300, autoattack=True),
    ("svhn", "smoke"): Scale(1, 32, 64, 32, 5, 32),
    ("covid", "paper"): Scale(100, 32, None, None, 100, 100, autoattack=True),
    ("covid", "cpu"): Scale(3, 32, 200, 40, 20, 40, autoattack=True),
    ("covid", "smoke"): Scale(1, 4, 8, 4, 3, 4),
}


def autoattack_by_default(dataset: str, profile: str) -> bool:
    """Whether the evaluation of a run of ``dataset`` at ``profile`` adds AutoAttack unless told otherwise."""
    scale = SCALES.get((dataset, profile))
    return scale is not None and scale.autoattack


def table_configs(
    dataset: str,
    norm: str,
    profile: str,
    *,
    seed: int = 0,
    methods: list[str] | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
    data_params: dict[str, Any] | None = None,
    **overrides: Any,
) -> list[RunConfig]:
    """One RunConfig per row of the paper's table for (dataset, norm) at ``profile``.

    ``methods`` keeps only rows whose label ('ima', 'adv0.3', ...) or method name
    is listed; ``method_params`` maps a method name to parameter overrides;
    ``overrides`` replace scale fields (epochs, n_train, ...).
    """
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not supported: use one of {', '.join(PROFILES)}")
    if (dataset, norm) not in TABLES:
        raise ConfigError(
            f"the paper has no table for dataset={dataset!r} with norm={norm!r}; available: "
            f"{', '.join(f'{d}/{n}' for d, n in TABLES)}"
        )
    scale = SCALES[(dataset, profile)]
    table = TABLES[(dataset, norm)]
    configs = []
    for row in table.rows:
        values: dict[str, Any] = dict(
            dataset=dataset,
            method=row.method,
            norm=norm,
            eps=row.eps,
            profile=profile,
            seed=seed,
            epochs=scale.epochs,
            batch_size=scale.batch_size,
            n_train=scale.n_train,
            n_test=scale.n_test,
            eval_steps=scale.eval_steps,
            eval_batch=scale.eval_batch,
            eval_eps=table.eps,
            optimizer=row.optimizer,
            weight_decay=row.weight_decay,
            method_params=(method_params or {}).get(row.method, {}),
            data_params=data_params or {},
        )
        values.update(overrides)
        config = RunConfig.from_dict(values)
        if methods is None or config.label in methods or config.method in methods:
            configs.append(config)
    if methods is not None and not configs:
        raise ConfigError(f"none of methods={methods} is a row of the {dataset}/{norm} table")
    return configs


def table_labels(dataset: str, norm: str) -> list[str]:
    """The row labels of the paper's table for (dataset, norm), in the table's order."""
    if (dataset, norm) not in TABLES:
        raise ConfigError(f"the paper has no table for dataset={dataset!r} with norm={norm!r}")
    return [c.label for c in table_configs(dataset, norm, "smoke")]


def variant_configs(
    dataset: str,
    norm: str,
    profile: str,
    rows: list[tuple[str, float]],
    *,
    seed: int = 0,
    data_params: dict[str, Any] | None = None,
) -> list[RunConfig]:
    """Rows beyond the paper's table, built like its adv row: ('rand', 0.1) is rand0.1, ('adv', 0.18) adv0.18.

    Every setting but the method and eps is the table's adv row's at ``profile`` (its first adv row: the eps
    it trains at is replaced).
    """
    adv = [c for c in table_configs(dataset, norm, profile, seed=seed, data_params=data_params) if c.method == "adv"]
    if not adv:
        raise ConfigError(f"the {dataset}/{norm} table has no adv row to build variants from")
    for method, eps in rows:
        if method not in ("adv", "rand") or eps <= 0:
            raise ConfigError(f"variant ({method!r}, {eps}): use ('adv' or 'rand', eps > 0)")
    return [adv[0].replace(method=method, eps=float(eps)) for method, eps in rows]
