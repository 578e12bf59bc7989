"""Re-run a record's configuration from scratch and compare it with the record.

Usage (``python -m imalib reproduce``)::

    imalib reproduce RUN_DIR [--device auto] [--data-root DIR] [--keep DIR] [--tolerance T] [--evaluate-only]

The run is trained and evaluated again in a temporary results root, from its
``config.json`` alone, and compared with what ``RUN_DIR`` holds: the accuracy
and envelope per eps, the per-sample robust masks (``robust.pt``), the margins
(``margins.pt``, IMA / MMA), the per-epoch training log without its timings
and, when committed, the weights (``model.pt``).

The verdict rests on the accuracies, the envelope, the robust masks and the
margins. When the record and the re-run both ran on the CPU, those must agree
bit for bit (tolerance 0). The training log and the weights are compared bit
for bit too and every difference is printed, but as a note: the float32
kernels torch picks depend on the CPU (its SIMD width, the BLAS blocking), so
another processor may train weights that differ in their last bits and still
give the same verdict on every test sample. When either ran on a GPU, float32 kernels are not
bitwise reproducible (their reduction order depends on the hardware and the
batch), and training amplifies any difference; there the check passes within
``GPU_TOLERANCE``: an accuracy or envelope value within 0.02 (two percentage
points), at most 2 % of the per-sample verdicts of a noise level flipped, and a
mean absolute margin difference within 2 % of eps_max.

On the CPU the verdict is one of three. **Reproduced bit for bit**: every
compared quantity is equal. **Reproduced within the noise**: training took
other floating-point paths (the training log or the weights differ, e.g. on
another CPU or with another thread count), and every accuracy and envelope value
is within the noise of a training run: ``2 * sqrt(2) * sigma`` per noise level,
sigma the row's seed sd (its records with other seeds beside the record) or,
where that is smaller or unknown, the binomial SE of the test set (at least one
sample); two runs of a configuration differ by sqrt(2) sigma in sd.
**NOT reproduced**: a value beyond that tolerance, or any evaluation difference
while training was bit for bit the same (then no floating-point drift explains
it). On a GPU, or with ``--tolerance``, the fixed tolerance above applies.

Every difference is printed; the exit status is 0 when the record is
reproduced (bit for bit, or within a given tolerance), 3 when it is reproduced
within the noise, 1 when it is not, and 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imalib.config import RunConfig
from imalib.errors import ConfigError

GPU_TOLERANCE = 0.02
EXIT_MISMATCH = 1
EXIT_ERROR = 2
EXIT_WITHIN_NOISE = 3
TRAINING_CHECKS = ("training log", "model.pt")
LOG_TIMINGS = ("seconds",)


@dataclass(frozen=True)
class Check:
    """One compared quantity: its name, whether it matched, and what differed."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _record_device(result: dict[str, Any]) -> str:
    """The device a record was made on: stated by newer records, CPU for those without a GPU in their environment."""
    if "device" in result:
        return str(result["device"])
    return "cpu" if (result.get("environment") or {}).get("cuda") is None else "unknown (a GPU was present)"


def compare_lists(
    name: str, recorded: Sequence[float], rerun: Sequence[float], eps: Sequence[float], tolerance: float
) -> Check:
    if len(recorded) != len(rerun):
        return Check(name, False, f"{len(recorded)} values recorded, {len(rerun)} re-run")
    bad = [
        f"eps {e:g}: {a!r} -> {b!r}"
        for e, a, b in zip(eps, recorded, rerun, strict=True)
        if not (a == b if tolerance == 0 else abs(a - b) <= tolerance)
    ]
    worst = max((abs(a - b) for a, b in zip(recorded, rerun, strict=True)), default=0.0)
    return Check(
        name,
        not bad,
        "; ".join(bad)
        if bad
        else f"{len(rerun)} values equal"
        if worst == 0
        else f"largest difference {worst:.4g} (within {tolerance:g})",
    )


def compare_masks(recorded: torch.Tensor, rerun: torch.Tensor, eps: Sequence[float], tolerance: float) -> Check:
    if recorded.shape != rerun.shape:
        return Check("robust.pt", False, f"shape {tuple(recorded.shape)} recorded, {tuple(rerun.shape)} re-run")
    differ = recorded.bool() != rerun.bool()
    counts = differ.sum(dim=1).tolist()
    if not any(counts):
        return Check("robust.pt", True, f"all {recorded.numel()} per-sample verdicts equal")
    n = recorded.shape[1]
    parts = []
    for e, count, row in zip(eps, counts, differ, strict=True):
        if count:
            samples = row.nonzero().squeeze(1)[:5].tolist()
            parts.append(f"eps {e:g}: {count}/{n} samples differ (e.g. {samples})")
    ok = tolerance > 0 and max(counts) <= tolerance * n
    return Check("robust.pt", ok, "; ".join(parts))


def compare_tensors(
    name: str, recorded: torch.Tensor, rerun: torch.Tensor, tolerance: float, scale: float = 1.0, required: bool = True
) -> Check:
    if recorded.shape != rerun.shape:
        return Check(name, False, f"shape {tuple(recorded.shape)} recorded, {tuple(rerun.shape)} re-run", required)
    if torch.equal(recorded, rerun):
        return Check(name, True, f"{recorded.numel()} values equal bit for bit", required)
    gap = (recorded.double() - rerun.double()).abs()
    n_diff = int((gap > 0).sum())
    mean = float(gap.mean()) / scale
    detail = f"{n_diff}/{recorded.numel()} values differ, largest {float(gap.max()):.4g}, mean {mean:.4g} (relative)"
    return Check(name, tolerance > 0 and mean <= tolerance, detail, required)


def compare_history(recorded: list[dict[str, Any]], rerun: list[dict[str, Any]], tolerance: float) -> Check:
    if len(recorded) != len(rerun):
        return Check("training log", False, f"{len(recorded)} epochs recorded, {len(rerun)} re-run")
    bad = []
    for old, new in zip(recorded, rerun, strict=True):
        for key in sorted(set(old) | set(new)):
            if key in LOG_TIMINGS:
                continue
            a, b = old.get(key), new.get(key)
            same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
            if not same:
                bad.append(f"epoch {old.get('epoch')} {key}: {a!r} -> {b!r}")
    detail = (
        "; ".join(bad[:6]) + (f"; ... {len(bad) - 6} more" if len(bad) > 6 else "")
        if bad
        else f"{len(rerun)} epochs equal (timings excluded)"
    )
    return Check("training log", not bad, detail, required=False)


def compare_runs(record_dir: Path, rerun_dir: Path, tolerance: float) -> list[Check]:
    """Every comparison between a recorded run directory and its re-run."""
    from imalib.io import load_torch

    old = json.loads((record_dir / "result.json").read_text())
    new = json.loads((rerun_dir / "result.json").read_text())
    eps = old["eps"]
    checks = [
        Check("eps levels", old["eps"] == new["eps"], f"{old['eps']} -> {new['eps']}"),
        Check(
            "n_train / n_test",
            (old["n_train"], old["n_test"]) == (new["n_train"], new["n_test"]),
            f"{old['n_train']}/{old['n_test']} -> {new['n_train']}/{new['n_test']}",
        ),
        compare_lists("accuracy", old["accuracy"], new["accuracy"], eps, tolerance),
        compare_lists("envelope", old["envelope"], new["envelope"], eps, tolerance),
    ]
    if (record_dir / "robust.pt").exists():
        checks.append(
            compare_masks(load_torch(record_dir / "robust.pt"), load_torch(rerun_dir / "robust.pt"), eps, tolerance)
        )
    else:
        checks.append(Check("robust.pt", False, "the record holds no robust.pt to compare", required=False))
    if (record_dir / "margins.pt").exists():
        eps_max = float(old["config"]["eps"]) or 1.0
        checks.append(
            compare_tensors(
                "margins.pt",
                load_torch(record_dir / "margins.pt"),
                load_torch(rerun_dir / "margins.pt"),
                tolerance,
                scale=eps_max,
            )
        )
    elif (rerun_dir / "margins.pt").exists():
        checks.append(Check("margins.pt", False, "the re-run has margins but the record holds no margins.pt"))
    checks.append(compare_history(old["history"], new["history"], tolerance))
    if (record_dir / "model.pt").exists():
        recorded, rerun = load_torch(record_dir / "model.pt"), load_torch(rerun_dir / "model.pt")
        names = sorted(set(recorded) | set(rerun))
        differing = [
            name
            for name in names
            if name not in recorded or name not in rerun or not torch.equal(recorded[name], rerun[name])
        ]
        checks.append(
            Check(
                "model.pt",
                not differing,
                f"{len(names)} tensors equal bit for bit"
                if not differing
                else f"{len(differing)}/{len(names)} tensors differ: {', '.join(differing[:4])}",
                required=False,
            )
        )
    return checks


@dataclass(frozen=True)
class NoiseVerdict:
    """The re-run's accuracies against the record's, judged by the noise of a training run (see the module)."""

    ok: bool
    largest: float  # the largest |difference| over accuracy and envelope
    where: str  # the value and eps of the largest difference
    tolerance: float  # the tolerance at that eps
    source: str  # where sigma came from
    beyond: tuple[str, ...]  # the cells beyond their tolerance
    rerun_accuracy: tuple[float, ...] = ()


def row_seed_sd(record_dir: Path, config: RunConfig) -> tuple[list[float] | None, int]:
    """Per eps, the sd of the accuracy over the records of ``config``'s row with every seed found beside
    ``record_dir`` (the record's own included); None when fewer than two seeds are there."""
    row = {k: v for k, v in config.to_dict().items() if k != "seed"}
    values = []
    for other in sorted(Path(record_dir).parent.glob("*/result.json")):
        try:
            data = json.loads(other.read_text())
            seen = RunConfig.from_dict(data["config"]).to_dict()
        except (OSError, ValueError, KeyError, ConfigError):
            continue
        if {k: v for k, v in seen.items() if k != "seed"} == row:
            values.append(data["accuracy"])
    if len(values) < 2:
        return None, len(values)
    columns = torch.tensor(values, dtype=torch.float64)
    return columns.std(dim=0, unbiased=True).tolist(), len(values)


def noise_verdict(record_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> NoiseVerdict:
    """Judge the re-run's accuracy and envelope against the record's by the noise of a training run."""
    config = RunConfig.from_dict(old["config"])
    sd, seeds = row_seed_sd(record_dir, config)
    n = int(old["n_test"])
    sigmas, sources = [], set()
    for k, p in enumerate(old["accuracy"]):
        se = max(math.sqrt(p * (1 - p) / n), 1.0 / n)
        use_sd = sd is not None and sd[k] > se
        sigmas.append(sd[k] if use_sd and sd is not None else se)
        sources.add(f"the seed sd of {seeds} seeds of the row" if use_sd else f"the binomial SE of {n} test samples")
    limits = [2.0 * math.sqrt(2.0) * s for s in sigmas]
    largest, where, at_tolerance, beyond = 0.0, "no accuracy or envelope value differs", limits[0], []
    for name in ("accuracy", "envelope"):
        for e, a, b, limit in zip(old["eps"], old[name], new[name], limits, strict=True):
            gap = abs(a - b)
            if gap > largest:
                largest, where, at_tolerance = gap, f"{name} at eps {e:g}: {a:.4f} -> {b:.4f}", limit
            if gap > limit:
                beyond.append(f"{name} at eps {e:g}: {a:.4f} -> {b:.4f} (tolerance {limit:.4f})")
    return NoiseVerdict(
        not beyond, largest, where, at_tolerance, " and ".join(sorted(sources)), tuple(beyond), tuple(new["accuracy"])
    )


def reproduce(
    record_dir: Path,
    *,
    device: str = "auto",
    data_root: str | None = None,
    keep: Path | None = None,
    tolerance: float | None = None,
    evaluate_only: bool = False,
) -> tuple[list[Check], float, Path | None, NoiseVerdict]:
    """Re-run ``record_dir``'s configuration in a fresh root; returns the checks, the tolerance, the kept dir
    and the re-run's accuracies judged by the noise of a training run (:func:`noise_verdict`).

    ``evaluate_only`` copies the record's weights (``model.pt``, with its
    ``train.json`` and ``margins.pt``) instead of training, and re-runs only the
    evaluation: a check of the evaluation alone, apart from training.
    """
    from imalib.device import device_name
    from imalib.runs import evaluate_run, run_dir, run_experiment

    record_dir = Path(record_dir)
    for name in ("config.json", "result.json"):
        if not (record_dir / name).is_file():
            raise FileNotFoundError(
                f"{record_dir} is not a finished run directory (no {name}); give a directory "
                f"that holds config.json and result.json"
            )
    try:
        config = RunConfig.from_dict(json.loads((record_dir / "config.json").read_text()))
        result = json.loads((record_dir / "result.json").read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{record_dir} holds unreadable JSON ({error}); restore the record from git") from None
    if result.get("config_hash") != config.hash():
        raise ConfigError(f"{record_dir}: config.json does not match the hash in result.json; restore the record")
    device = device_name(device)
    on_cpu = device == "cpu" and _record_device(result) == "cpu"
    if tolerance is None:
        tolerance = 0.0 if on_cpu else GPU_TOLERANCE
    with tempfile.TemporaryDirectory(prefix="imalib-reproduce-") as scratch:
        root = Path(keep) if keep is not None else Path(scratch)
        if evaluate_only:
            if not (record_dir / "model.pt").is_file():
                raise FileNotFoundError(
                    f"{record_dir} holds no model.pt (weights of large models are not "
                    f"committed): reproduce it without --evaluate-only"
                )
            target = run_dir(config, root)
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name in ("config.json", "train.json", "model.pt", "margins.pt"):
                if (record_dir / name).is_file():
                    shutil.copy2(record_dir / name, target / name)
            evaluate_run(target, data_root=data_root, device=device)
            rerun_path = target
        else:
            rerun_path = run_experiment(
                config, results_root=root, data_root=data_root, device=device, force=True, progress=False
            ).path
        checks = compare_runs(record_dir, rerun_path, tolerance)
        noise = noise_verdict(record_dir, result, json.loads((Path(rerun_path) / "result.json").read_text()))
        return checks, tolerance, run_dir(config, root) if keep is not None else None, noise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="imalib reproduce",
        description="Re-run a record's configuration from "
        "scratch in a temporary directory and compare it with the record.",
    )
    parser.add_argument("run_dir", help="a finished run directory, e.g. results/moons/ce-linf-80a9eb9a3ea6")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else cpu), cpu or cuda")
    parser.add_argument("--data-root", dest="data_root", default=None, metavar="DIR")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the re-run under this results root")
    parser.add_argument(
        "--evaluate-only",
        dest="evaluate_only",
        action="store_true",
        help="re-evaluate the record's own weights instead of training again",
    )
    parser.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="also write the comparison (checks, verdict, both machines) to this JSON file",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"override the tolerance (default: 0 when record and re-run are on the CPU, else {GPU_TOLERANCE})",
    )
    args = parser.parse_args(argv)
    try:
        if args.tolerance is not None and not args.tolerance >= 0:
            raise ConfigError(f"--tolerance {args.tolerance} must be >= 0")
        record = (
            json.loads((Path(args.run_dir) / "result.json").read_text())
            if (Path(args.run_dir) / "result.json").is_file()
            else {}
        )
        checks, tolerance, kept, noise = reproduce(
            Path(args.run_dir),
            device=args.device,
            data_root=args.data_root,
            keep=Path(args.keep) if args.keep else None,
            tolerance=args.tolerance,
            evaluate_only=args.evaluate_only,
        )
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    from imalib.device import device_name

    mode = "bit for bit" if tolerance == 0 else f"within tolerance {tolerance:g}"
    if args.evaluate_only:
        mode += "; evaluation only (the record's weights)"
    print(
        f"reproduce {args.run_dir}: record made on {_record_device(record)} (torch "
        f"{(record.get('environment') or {}).get('torch')}), re-run on {device_name(args.device)}, compared {mode}"
    )
    for check in checks:
        status = "ok  " if check.ok else ("DIFF" if check.required else "note")
        print(f"  {status} {check.name}: {check.detail}")
    if kept is not None:
        print(f"re-run kept in {kept}")
    text, code = verdict(checks, tolerance, noise, evaluate_only=args.evaluate_only)
    print(text)
    if args.record:
        write_comparison(Path(args.record), Path(args.run_dir), record, checks, noise, text, code)
        print(f"comparison written to {args.record}")
    return code


def write_comparison(
    file: Path,
    run_dir: Path,
    record: dict[str, Any],
    checks: Sequence[Check],
    noise: NoiseVerdict,
    text: str,
    code: int,
) -> None:
    """A committed comparison record: which run, both machines, every check and the verdict."""
    from dataclasses import asdict

    from imalib.device import environment
    from imalib.io import write_json

    values = {
        "run": run_dir.name,
        "dataset": record.get("dataset"),
        "label": record.get("label"),
        "seed": record.get("seed"),
        "n_test": record.get("n_test"),
        "eps": record.get("eps"),
        "recorded_accuracy": record.get("accuracy"),
        "record_environment": record.get("environment"),
        "rerun_environment": environment(),
        "checks": [asdict(c) for c in checks],
        "noise": asdict(noise),
        "verdict": text,
        "exit_code": code,
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json(file, values)


def verdict(checks: Sequence[Check], tolerance: float, noise: NoiseVerdict, *, evaluate_only: bool) -> tuple[str, int]:
    """The printed verdict and the exit status (see the module docstring)."""
    failed = [check for check in checks if check.required and not check.ok]
    if tolerance > 0:
        if failed:
            return f"NOT reproduced: {len(failed)} of {len(checks)} checks differ", EXIT_MISMATCH
        return f"reproduced within tolerance {tolerance:g}", 0
    if all(check.ok for check in checks):
        return "reproduced bit for bit", 0
    training_differs = not evaluate_only and any(not c.ok for c in checks if c.name in TRAINING_CHECKS)
    if not training_differs:
        return (
            f"NOT reproduced: {len(failed)} of {len(checks)} checks differ although training was the same bit for "
            "bit, so floating-point drift does not explain them",
            EXIT_MISMATCH,
        )
    if noise.ok:
        return (
            f"reproduced within the noise (largest difference {noise.largest:.4f}, {noise.where}; tolerance "
            f"{noise.tolerance:.4f}, 2 sqrt(2) sigma from {noise.source}): training took other floating-point paths",
            EXIT_WITHIN_NOISE,
        )
    return "NOT reproduced: beyond the noise of a training run: " + "; ".join(noise.beyond), EXIT_MISMATCH


__all__ = ["GPU_TOLERANCE", "Check", "NoiseVerdict", "compare_runs", "main", "noise_verdict", "reproduce", "verdict"]
