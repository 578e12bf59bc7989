"""Evaluations added to a finished run afterwards: its weights restored, a larger test subset, white noise.

The weights of the image models are not committed. :func:`restore_weights`
trains a run again in a scratch root and keeps the weights only if the paper's
PGD on the run's own test images then reproduces the committed ``robust.pt``
bit for bit; it writes ``weights.json`` to say so. :func:`add_large_test` (the
paper's PGD, and optionally the worst of PGD and AutoAttack, on more test
images) and :func:`add_white_noise` (the paper's Appendix B test) write their
own entries into the record and say which weights they measured; the record's
own numbers are left as they are.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imalib.config import RunConfig
from imalib.data.base import ArrayDataset
from imalib.device import device_name
from imalib.errors import CheckpointError, ConfigError
from imalib.evaluate import evaluate_robustness, predict
from imalib.io import load_torch, save_torch, write_json
from imalib.records import RESULT_FILE, LargeTestEntry, ResultRecord, WhiteNoiseEntry, read_record
from imalib.runs import _load_trained, environment, run_experiment, splits_of

WEIGHTS_NOTE = "weights.json"
LARGE_FILES = {"pgd": "robust_large.pt", "worst_of_both": "worst_large.pt"}
WHITE_NOISE_LEVELS = (0.05, 0.1, 0.2, 0.3)  # 0.05 is the paper's (Appendix B); the others draw its curve


def _record(path: Path) -> ResultRecord:
    if not (path / RESULT_FILE).exists():
        raise FileNotFoundError(f"{path} has no result.json: evaluate it first with 'imalib evaluate {path}'")
    return read_record(path / RESULT_FILE)


def restore_weights(
    path: str | Path, *, scratch_root: str | Path, data_root: str | Path | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Give an evaluated run whose ``model.pt`` is missing its weights back, proven to be the record's.

    The run is trained and evaluated (PGD only) again under ``scratch_root``; if
    the new ``robust.pt`` equals the run's own bit for bit, its ``model.pt`` is
    copied into the run and ``weights.json`` written (what was checked, where,
    and what it cost). Otherwise nothing is copied and a CheckpointError says
    how many outcomes differ: the weights would not be the record's. Returns
    the note (the existing one if the run has weights and a note already).
    """
    path = Path(path)
    record = _record(path)
    note_file = path / WEIGHTS_NOTE
    if (path / "model.pt").exists() and note_file.exists():
        return dict(json.loads(note_file.read_text()))
    again = run_experiment(record.config, results_root=scratch_root, data_root=data_root, device=device,
                           autoattack=False)  # fmt: skip
    mine, theirs = load_torch(again.path / "robust.pt"), load_torch(path / "robust.pt")
    if mine.shape != theirs.shape or not torch.equal(mine, theirs):
        differ = int((mine != theirs).sum()) if mine.shape == theirs.shape else "all"
        raise CheckpointError(
            f"{path}: the run trained again here differs from its record ({differ} of {theirs.numel()} PGD "
            f"outcomes); its weights are not the record's. Re-run the record on this machine to replace it "
            f"(delete {path} and train it again), or restore the weights on a machine like the record's "
            f"(its environment: {record.environment.processor or record.environment.machine})"
        )
    shutil.copyfile(again.path / "model.pt", path / "model.pt")
    note = {
        "check": f"trained again; the paper's PGD on the run's {theirs.shape[1]} test images reproduces robust.pt "
        "bit for bit",
        "environment": environment().to_json(),
        "train_seconds": again.record.train_seconds,
        "eval_seconds": again.record.eval_seconds,
    }
    write_json(note_file, note)
    return note


def weights_statement(path: Path, model: nn.Module, config: RunConfig, data_root: str | Path | None) -> str:
    """How the weights in ``path`` are known to be the record's; checks that they classify its test images as
    its ``robust.pt`` says (the clean row) and raises a CheckpointError where they do not."""
    splits = splits_of(config, data_root)
    clean = (predict(model, splits.test.inputs()) == splits.test.y).cpu()
    recorded = load_torch(path / "robust.pt")[0].cpu()
    if not torch.equal(clean, recorded):
        raise CheckpointError(
            f"{path}: model.pt classifies {int((clean != recorded).sum())} of its test images differently from "
            f"the record; these are not the record's weights: restore them with restore_weights first"
        )
    note_file = path / WEIGHTS_NOTE
    if note_file.exists():
        return str(json.loads(note_file.read_text())["check"])
    return "the run's own model.pt (committed or kept from its training); its clean predictions match robust.pt"


def _model(path: Path, device: str) -> tuple[RunConfig, nn.Module]:
    if not (path / "model.pt").exists():
        raise CheckpointError(
            f"{path} has no model.pt (image weights are not committed): restore them first with "
            f"'imalib reevaluate --restore-weights SCRATCH_DIR {path}'"
        )
    config, model, _ = _load_trained(path)
    return config, model.to(device).eval()


def own_positions(large: ArrayDataset, own: ArrayDataset, path: Path | str = "the run") -> torch.Tensor:
    """Where each of the run's own test images sits in the larger test subset (images and labels equal); a
    ConfigError when one is missing, i.e. the dataset's test subsets do not nest."""
    where: dict[tuple[bytes, int], int] = {}
    for i, (image, label) in enumerate(zip(large.inputs(), large.y.tolist(), strict=True)):
        where.setdefault((image.numpy().tobytes(), int(label)), i)
    found = [where.get((image.numpy().tobytes(), int(label))) for image, label in zip(own.inputs(), own.y.tolist(),
                                                                                      strict=True)]  # fmt: skip
    if any(i is None for i in found):
        raise ConfigError(
            f"{path}: {sum(i is None for i in found)} of the run's {len(own)} test images are not among the "
            f"{len(large)}, so the larger test would not contain the record's; the large test needs a dataset whose "
            f"test subsets nest (the image datasets' fixed permutation), not one drawn afresh per size"
        )
    return torch.tensor(found)


def add_large_test(
    path: str | Path,
    *,
    n_images: int,
    autoattack: bool = False,
    data_root: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> ResultRecord:
    """The paper's PGD on ``n_images`` test images of the dataset's fixed permutation (a superset of the run's
    own: :func:`own_positions` finds them), with the run's eps, steps and seed, written as the record's
    ``large_test`` entry.

    ``autoattack=True`` also runs AutoAttack (the custom set) on the images PGD
    left robust at each level, the cascade that gives the worst of both per
    image at the cost of the survivors alone. Writes ``robust_large.pt`` (and
    ``worst_large.pt``).
    """
    path = Path(path)
    record = _record(path)
    if n_images <= record.n_test:
        raise ConfigError(f"n_images={n_images}: choose more than the run's own {record.n_test} test images")
    device = device_name(device)
    config, model = _model(path, device)
    weights = weights_statement(path, model, config, data_root)
    splits = splits_of(config.replace(n_test=n_images), data_root)
    if len(splits.test) < n_images:
        raise ConfigError(f"n_images={n_images}: the {config.dataset} test set has only {len(splits.test)} images")
    own_positions(splits.test, splits_of(config, data_root).test, path)
    x, y = splits.test.inputs().to(device), splits.test.y.to(device)
    pgd = evaluate_robustness(
        model, x, y, norm=config.norm, eps_list=config.eval_eps, steps=config.eval_steps, clip=splits.clip,
        batch_size=config.eval_batch, seed=config.seed, progress=progress,
    )  # fmt: skip
    save_torch(path / LARGE_FILES["pgd"], pgd.robust)
    worst: tuple[float, ...] | None = None
    settings: dict[str, Any] | None = None
    if autoattack:
        from imalib.autoattack import evaluate_autoattack

        began = time.perf_counter()
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        result = evaluate_autoattack(
            model, x, y, norm=config.norm, eps_list=config.eval_eps, clip=splits.clip, num_classes=num_classes,
            seed=config.seed, batch_size=config.eval_batch, progress=progress, candidates=pgd.robust,
        )  # fmt: skip
        save_torch(path / LARGE_FILES["worst_of_both"], result.robustness.robust)
        worst = tuple(result.robustness.accuracy)
        settings = {
            **result.settings.to_dict(),
            "scope": "cascade: the images PGD left robust at each level",
            "seconds": time.perf_counter() - began,
            "level_seconds": list(result.level_seconds),
        }
    entry = LargeTestEntry(
        n_images=n_images,
        eps=pgd.eps,
        accuracy=tuple(pgd.accuracy),
        seconds=pgd.seconds,
        weights=weights,
        environment=environment().to_json(),
        worst_of_both=worst,
        autoattack=settings,
    )
    record = replace(record, large_test=entry)
    write_json(path / RESULT_FILE, record.to_json())
    model.to("cpu")
    return record


def load_large_test(path: str | Path, attack: str = "pgd") -> torch.Tensor | None:
    """The per-image outcome of the large test ([eps, images]): ``attack`` 'pgd' or 'worst_of_both'; or None."""
    if attack not in LARGE_FILES:
        raise ConfigError(f"attack={attack!r}: use one of {', '.join(LARGE_FILES)}")
    file = Path(path) / LARGE_FILES[attack]
    return load_torch(file) if file.exists() else None


def add_white_noise(
    path: str | Path,
    *,
    levels: Sequence[float] = WHITE_NOISE_LEVELS,
    repeats: int = 20,
    data_root: str | Path | None = None,
    device: str = "auto",
) -> ResultRecord:
    """The paper's white-noise test on the run's own test images, written as the record's ``white_noise`` entry.

    Every test image gets ``repeats`` draws of uniform noise in [-level, level]
    per input element (clamped to the data's box) at each level; the draws are
    seeded with the run's seed.
    """
    from imalib.noise import white_noise_rates

    path = Path(path)
    record = _record(path)
    if repeats < 1:
        raise ConfigError(f"repeats={repeats} must be at least 1")
    device = device_name(device)
    config, model = _model(path, device)
    weights = weights_statement(path, model, config, data_root)
    splits = splits_of(config, data_root)
    began = time.perf_counter()
    errors, flips, clean_error = white_noise_rates(
        model, splits.test.inputs(), splits.test.y, levels=tuple(float(v) for v in levels), repeats=repeats,
        clip=splits.clip, seed=config.seed,
    )  # fmt: skip
    entry = WhiteNoiseEntry(
        levels=tuple(float(v) for v in levels),
        error_rate=tuple(errors),
        flip_rate=tuple(flips),
        clean_error=clean_error,
        repeats=repeats,
        n_images=len(splits.test),
        seed=config.seed,
        seconds=time.perf_counter() - began,
        weights=weights,
    )
    record = replace(record, white_noise=entry)
    write_json(path / RESULT_FILE, record.to_json())
    model.to("cpu")
    return record
