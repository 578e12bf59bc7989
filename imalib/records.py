"""The result record of one evaluated run (``result.json``), typed, and the one way to collect them.

:class:`ResultRecord` holds every field of ``result.json``; ``from_json`` and
``to_json`` are exact inverses on every committed record (a test checks the
text itself). :func:`collect` reads all records under a results root,
optionally of one dataset, norm or profile. Readers use the attributes, never
string keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from imalib.config import RunConfig
from imalib.errors import ConfigError

RESULT_FILE = "result.json"


def _take(values: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in values:
        raise ConfigError(f"{where} has no {name!r}; delete it to evaluate that run again")
    value = values.pop(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ConfigError(
            f"{where}: {name}={value!r} has type {type(value).__name__}; delete it to evaluate that run again"
        )
    return value


def _entry_fields(values: Any, where: str, what: str, fix: str) -> dict[str, Any]:
    """A copy of ``values`` to take fields from, or a ConfigError naming ``what`` it should be and the ``fix``."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} is not {what}; {fix}")
    return dict(values)


def _no_extra(values: dict[str, Any], where: str) -> None:
    if values:
        raise ConfigError(
            f"{where} has unknown fields {sorted(values)} (written by another imalib version?); "
            f"delete it to evaluate that run again"
        )


@dataclass(frozen=True)
class EpochLog:
    """One entry of the training log: accuracy on the training batches, wall time, the method's loss terms.

    ``mean_margin`` is the mean of the margin store after the epoch (IMA, MMA)
    and None for methods without one; ``terms`` are the per-sample means of the
    method's named loss terms (e.g. IMA's L01, L2, found).
    """

    epoch: int
    train_acc: float
    seconds: float
    mean_margin: float | None = None
    terms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "history entry") -> EpochLog:
        rest = dict(values)
        epoch = _take(rest, "epoch", int, where)
        train_acc = _take(rest, "train_acc", (int, float), where)
        seconds = _take(rest, "seconds", (int, float), where)
        mean_margin = _take(rest, "mean_margin", (int, float), where) if "mean_margin" in rest else None
        for key, value in rest.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{where}: loss term {key}={value!r} is not a number")
        return cls(epoch, train_acc, seconds, mean_margin, dict(rest))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "train_acc": self.train_acc, "seconds": self.seconds}
        out.update(self.terms)
        if self.mean_margin is not None:
            out["mean_margin"] = self.mean_margin
        return out


@dataclass(frozen=True)
class MarginSummary:
    """The final margin store of IMA / MMA: its mean and a histogram (counts per bin, bin edges)."""

    mean: float
    counts: tuple[float, ...]
    edges: tuple[float, ...]

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "margins") -> MarginSummary:
        rest = dict(values)
        out = cls(
            _take(rest, "mean", (int, float), where),
            tuple(_take(rest, "counts", list, where)),
            tuple(_take(rest, "edges", list, where)),
        )
        _no_extra(rest, where)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "counts": list(self.counts), "edges": list(self.edges)}


@dataclass(frozen=True)
class Environment:
    """Library versions and hardware of the machine that produced the record.

    The nine fields every record has are typed; what a newer imalib records
    besides (e.g. GPU numerics flags) is kept, unchanged, in ``extra``.
    """

    python: str
    torch: str
    numpy: str
    sklearn: str
    machine: str
    processor: str
    cpu_count: int | None
    torch_threads: int
    cuda: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "environment") -> Environment:
        names = [f.name for f in fields(cls) if f.name != "extra"]
        missing = sorted(set(names) - set(values))
        if missing:
            raise ConfigError(f"{where} lacks {missing}; delete the record to evaluate that run again")
        extra = {key: value for key, value in values.items() if key not in names}
        return cls(**{name: values[name] for name in names}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class AutoAttackEntry:
    """AutoAttack on a run's test images (or a subset), beside the paper's PGD.

    ``accuracy`` is the robust accuracy under AutoAttack alone at each ``eps``
    (the record's own levels); ``worst_of_both`` counts an image as robust only
    if both PGD and AutoAttack failed on it (per image, the AND of the two
    outcomes, so it is never above either). ``settings`` is what
    :class:`imalib.autoattack.AutoAttackSettings` records; ``level_seconds``
    the wall time per eps level; ``indices`` the test images attacked when
    only a subset was (None: all of them, in order).

    ``mode`` says which images AutoAttack attacked: ``"full"`` every image
    classified correctly on clean data (``accuracy`` is then AutoAttack alone),
    ``"cascade"`` only those PGD left robust at that eps, which gives the same
    ``worst_of_both`` for less time but no AutoAttack-alone column
    (``accuracy`` None). ``attacked`` is the number of images attacked per eps
    (None in records written before it was kept).
    """

    eps: tuple[float, ...]
    accuracy: tuple[float, ...] | None
    worst_of_both: tuple[float, ...]
    pgd_accuracy: tuple[float, ...]
    n_images: int
    settings: Mapping[str, Any]
    seconds: float
    level_seconds: tuple[float, ...]
    indices: tuple[int, ...] | None = None
    mode: str = "full"
    attacked: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.eps)
        lengths = [len(self.worst_of_both), len(self.pgd_accuracy), len(self.level_seconds)]
        lengths += [len(x) for x in (self.accuracy, self.attacked) if x is not None]
        if any(length != n for length in lengths):
            raise ConfigError(
                "autoattack entry: eps, accuracy, worst_of_both, pgd_accuracy, level_seconds and attacked "
                "differ in length; run 'imalib evaluate --attack autoattack RUN_DIR' again"
            )
        if self.mode not in ("full", "cascade"):
            raise ConfigError(
                f"autoattack entry: mode={self.mode!r} is neither 'full' nor 'cascade'; run "
                "'imalib evaluate --attack autoattack RUN_DIR' again"
            )
        if (self.accuracy is None) != (self.mode == "cascade"):
            raise ConfigError(
                f"autoattack entry: mode {self.mode!r} with accuracy {'missing' if self.accuracy is None else 'kept'} "
                "(AutoAttack alone is measured in the full mode only); run "
                "'imalib evaluate --attack autoattack RUN_DIR' again"
            )

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "autoattack") -> AutoAttackEntry:
        rest = _entry_fields(
            values, where, "an AutoAttack entry", "run 'imalib evaluate --attack autoattack RUN_DIR' again"
        )
        series = {
            name: tuple(_take(rest, name, list, where))
            for name in ("eps", "worst_of_both", "pgd_accuracy", "level_seconds")
        }
        accuracy = _take(rest, "accuracy", (list, type(None)), where)
        n_images = _take(rest, "n_images", int, where)
        settings = _take(rest, "settings", dict, where)
        seconds = _take(rest, "seconds", (int, float), where)
        indices_json = _take(rest, "indices", (list, type(None)), where) if "indices" in rest else None
        mode = _take(rest, "mode", str, where) if "mode" in rest else "full"
        attacked = _take(rest, "attacked", (list, type(None)), where) if "attacked" in rest else None
        _no_extra(rest, where)
        return cls(
            **series,
            accuracy=None if accuracy is None else tuple(accuracy),
            n_images=n_images,
            settings=settings,
            seconds=seconds,
            indices=None if indices_json is None else tuple(indices_json),
            mode=mode,
            attacked=None if attacked is None else tuple(attacked),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eps": list(self.eps),
            "accuracy": None if self.accuracy is None else list(self.accuracy),
            "worst_of_both": list(self.worst_of_both),
            "pgd_accuracy": list(self.pgd_accuracy),
            "n_images": self.n_images,
            "settings": dict(self.settings),
            "seconds": self.seconds,
            "level_seconds": list(self.level_seconds),
        }
        if self.indices is not None:
            out["indices"] = list(self.indices)
        if self.mode != "full":  # records written before the cascade existed are all full
            out["mode"] = self.mode
        if self.attacked is not None:
            out["attacked"] = list(self.attacked)
        return out


@dataclass(frozen=True)
class LargeTestEntry:
    """The paper's PGD on a larger test subset than the profile's, kept apart so the profile's numbers stay
    comparable.

    ``n_images`` test images: the first ``n_images`` of the test set's fixed permutation (kept in file order),
    so the profile's own test images are among them. ``accuracy`` is the paper's PGD (100 steps, both losses)
    at each ``eps``;
    ``worst_of_both`` the worst of PGD and AutoAttack per image where AutoAttack was run on them (None: not yet;
    ``autoattack`` then holds its settings and seconds). ``weights`` says how the weights evaluated were
    shown to be the record's (image weights are not committed and may have been retrained).
    """

    n_images: int
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    seconds: float
    weights: str
    environment: Mapping[str, Any]
    worst_of_both: tuple[float, ...] | None = None
    autoattack: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.accuracy) != len(self.eps) or (
            self.worst_of_both is not None and len(self.worst_of_both) != len(self.eps)
        ):
            raise ConfigError("large_test entry: eps, accuracy and worst_of_both differ in length; evaluate it again")

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "large_test") -> LargeTestEntry:
        rest = _entry_fields(
            values, where, "a large-test entry", "run 'imalib reevaluate --large-test N RUN_DIR' again"
        )
        n_images = _take(rest, "n_images", int, where)
        eps = tuple(_take(rest, "eps", list, where))
        accuracy = tuple(_take(rest, "accuracy", list, where))
        seconds = _take(rest, "seconds", (int, float), where)
        weights = _take(rest, "weights", str, where)
        environment = _take(rest, "environment", dict, where)
        worst = _take(rest, "worst_of_both", list, where) if "worst_of_both" in rest else None
        autoattack = _take(rest, "autoattack", dict, where) if "autoattack" in rest else None
        _no_extra(rest, where)
        return cls(
            n_images,
            eps,
            accuracy,
            seconds,
            weights,
            environment,
            None if worst is None else tuple(worst),
            autoattack,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_images": self.n_images,
            "eps": list(self.eps),
            "accuracy": list(self.accuracy),
            "seconds": self.seconds,
            "weights": self.weights,
            "environment": dict(self.environment),
        }
        if self.worst_of_both is not None:
            out["worst_of_both"] = list(self.worst_of_both)
        if self.autoattack is not None:
            out["autoattack"] = dict(self.autoattack)
        return out


@dataclass(frozen=True)
class WhiteNoiseEntry:
    """The paper's white-noise test (its Appendix B) on a run's test images.

    Every test image gets ``repeats`` draws of uniform noise in [-level, level] per input element at each of
    ``levels``. ``error_rate`` is the share of all noisy draws the model misclassifies (the clean errors
    included, as the paper's count reads); ``flip_rate`` the share of the draws of clean-correct images that
    the noise turns wrong (what the noise itself does).
    """

    levels: tuple[float, ...]
    error_rate: tuple[float, ...]
    flip_rate: tuple[float, ...]
    clean_error: float
    repeats: int
    n_images: int
    seed: int
    seconds: float
    weights: str

    def __post_init__(self) -> None:
        if not len(self.levels) == len(self.error_rate) == len(self.flip_rate):
            raise ConfigError("white_noise entry: levels, error_rate and flip_rate differ in length; measure again")

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "white_noise") -> WhiteNoiseEntry:
        rest = _entry_fields(
            values, where, "a white-noise entry", "run 'imalib reevaluate --white-noise RUN_DIR' again"
        )
        out = cls(
            levels=tuple(_take(rest, "levels", list, where)),
            error_rate=tuple(_take(rest, "error_rate", list, where)),
            flip_rate=tuple(_take(rest, "flip_rate", list, where)),
            clean_error=_take(rest, "clean_error", (int, float), where),
            repeats=_take(rest, "repeats", int, where),
            n_images=_take(rest, "n_images", int, where),
            seed=_take(rest, "seed", int, where),
            seconds=_take(rest, "seconds", (int, float), where),
            weights=_take(rest, "weights", str, where),
        )
        _no_extra(rest, where)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "error_rate": list(self.error_rate),
            "flip_rate": list(self.flip_rate),
            "clean_error": self.clean_error,
            "repeats": self.repeats,
            "n_images": self.n_images,
            "seed": self.seed,
            "seconds": self.seconds,
            "weights": self.weights,
        }


@dataclass(frozen=True)
class ResultRecord:
    """Every field of one run's ``result.json``.

    ``eps``, ``accuracy``, ``envelope`` and ``rises`` are the paper's numbers
    (robust accuracy per evaluation eps, its monotone envelope, and where it
    rises: a gradient-masking sign); ``history`` is the training log;
    ``margins`` the final margin store (None without one). ``eval_protocol``
    and ``device`` are absent (None) in records written before they were
    recorded.
    """

    dataset: str
    method: str
    label: str
    norm: str
    profile: str
    seed: int
    config_hash: str
    config: RunConfig
    data: str
    n_train: int
    n_test: int
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    envelope: tuple[float, ...]
    rises: tuple[bool, ...]
    history: tuple[EpochLog, ...]
    margins: MarginSummary | None
    train_seconds: float
    eval_seconds: float
    environment: Environment
    seconds_note: str
    eval_protocol: str | None = None
    device: str | None = None
    autoattack: AutoAttackEntry | None = None
    autoattack_standard: AutoAttackEntry | None = None
    large_test: LargeTestEntry | None = None
    white_noise: WhiteNoiseEntry | None = None

    def __post_init__(self) -> None:
        n = len(self.eps)
        if not len(self.accuracy) == len(self.envelope) == len(self.rises) == n:
            raise ConfigError(
                f"record of {self.label} ({self.config_hash}): eps, accuracy, envelope and rises "
                f"differ in length; delete it to evaluate that run again"
            )

    @property
    def final(self) -> EpochLog:
        """The last epoch of the training log."""
        return self.history[-1]

    def accuracy_at(self, eps: float) -> float:
        """The robust accuracy at evaluation level ``eps`` (which must be one of ``self.eps``)."""
        if eps not in self.eps:
            raise ConfigError(
                f"eps={eps:g} is not an evaluation level of {self.label}: use one of "
                f"{', '.join(f'{v:g}' for v in self.eps)}"
            )
        return self.accuracy[self.eps.index(eps)]

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "result record") -> ResultRecord:
        """Read a record from the decoded ``result.json``; every field is checked, unknown ones refused."""
        rest = _entry_fields(values, where, "an imalib result record", "delete it to evaluate that run again")
        text = {
            name: _take(rest, name, str, where)
            for name in ("dataset", "method", "label", "norm", "profile", "config_hash", "data", "seconds_note")
        }
        numbers = {name: _take(rest, name, int, where) for name in ("seed", "n_train", "n_test")}
        seconds = {name: _take(rest, name, (int, float), where) for name in ("train_seconds", "eval_seconds")}
        series = {name: tuple(_take(rest, name, list, where)) for name in ("eps", "accuracy", "envelope", "rises")}
        if len({len(values) for values in series.values()}) != 1:
            raise ConfigError(
                f"{where}: eps, accuracy, envelope and rises differ in length; delete it to evaluate that run again"
            )
        config = RunConfig.from_dict(_take(rest, "config", dict, where))
        history = tuple(EpochLog.from_json(entry, f"{where} history") for entry in _take(rest, "history", list, where))
        margins_json = _take(rest, "margins", (dict, type(None)), where)
        margins = None if margins_json is None else MarginSummary.from_json(margins_json, f"{where} margins")
        environment = Environment.from_json(_take(rest, "environment", dict, where), f"{where} environment")
        protocol = _take(rest, "eval_protocol", str, where) if "eval_protocol" in rest else None
        device = _take(rest, "device", str, where) if "device" in rest else None
        autoattack, autoattack_standard = (
            AutoAttackEntry.from_json(_take(rest, name, dict, where), f"{where} {name}") if name in rest else None
            for name in ("autoattack", "autoattack_standard")
        )
        large_test = (
            LargeTestEntry.from_json(_take(rest, "large_test", dict, where), f"{where} large_test")
            if "large_test" in rest
            else None
        )
        white_noise = (
            WhiteNoiseEntry.from_json(_take(rest, "white_noise", dict, where), f"{where} white_noise")
            if "white_noise" in rest
            else None
        )
        _no_extra(rest, where)
        return cls(
            **text,
            **numbers,
            **seconds,
            **series,  # type: ignore[arg-type]
            config=config,
            history=history,
            margins=margins,
            environment=environment,
            eval_protocol=protocol,
            device=device,
            autoattack=autoattack,
            autoattack_standard=autoattack_standard,
            large_test=large_test,
            white_noise=white_noise,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as ``result.json`` holds it (the inverse of :meth:`from_json`)."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "method": self.method,
            "label": self.label,
            "norm": self.norm,
            "profile": self.profile,
            "seed": self.seed,
            "config_hash": self.config_hash,
            "config": self.config.to_dict(),
            "data": self.data,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "eps": list(self.eps),
            "accuracy": list(self.accuracy),
            "envelope": list(self.envelope),
            "rises": list(self.rises),
            "history": [entry.to_json() for entry in self.history],
            "margins": None if self.margins is None else self.margins.to_json(),
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "environment": self.environment.to_json(),
            "seconds_note": self.seconds_note,
        }
        if self.eval_protocol is not None:
            out["eval_protocol"] = self.eval_protocol
        if self.device is not None:
            out["device"] = self.device
        for name, entry in (("autoattack", self.autoattack), ("autoattack_standard", self.autoattack_standard)):
            if entry is not None:
                out[name] = entry.to_json()
        if self.large_test is not None:
            out["large_test"] = self.large_test.to_json()
        if self.white_noise is not None:
            out["white_noise"] = self.white_noise.to_json()
        return out


def read_record(file: str | Path) -> ResultRecord:
    """Load one ``result.json``; a file that is not valid JSON or not a record gets a one-line error."""
    file = Path(file)
    try:
        values = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file} is not valid JSON ({error}); delete it to evaluate that run again") from None
    return ResultRecord.from_json(values, where=str(file))


def collect(
    root: str | Path, *, dataset: str | None = None, norm: str | None = None, profile: str | None = None
) -> list[ResultRecord]:
    """Every result record under ``root`` (optionally of one dataset, norm and/or profile), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results root {root} does not exist or is not a directory")
    records = []
    for file in sorted(root.rglob(RESULT_FILE)):
        record = read_record(file)
        if (
            (dataset is None or record.dataset == dataset)
            and (norm is None or record.norm == norm)
            and (profile is None or record.profile == profile)
        ):
            records.append(record)
    return records


__all__ = [
    "RESULT_FILE",
    "AutoAttackEntry",
    "Environment",
    "EpochLog",
    "LargeTestEntry",
    "MarginSummary",
    "ResultRecord",
    "collect",
    "read_record",
    "WhiteNoiseEntry",
]
