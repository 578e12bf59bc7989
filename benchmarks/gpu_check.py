"""GPU check: every method on every dataset for two training batches and one evaluation, then paper-scale epochs.

    python benchmarks/gpu_check.py                      # on a CUDA machine; elsewhere it says so and exits 0
    python benchmarks/gpu_check.py --device cpu --datasets moons --paper-batches 2 --output /tmp/check.json

Part 1 (smoke): for each dataset (Moons generated; SVHN and COVID-19 from small
generated files in the official formats; Fashion-MNIST from the data root when
its files are there, else random images of its shape) and each method: the
dataset's model on the device, two training batches through the real loop
(``fit``), then one evaluation (``evaluate_robustness``, a few PGD steps at two
noise levels). A cell passes when it finishes with a finite loss.

Part 2 (paper profile): one epoch of the Fashion-MNIST CNN on the full training
set (55000 images, batch 128) for adv (eps 0.3) and IMA (eps_max 0.3, with
Algorithm 2's margin pass), timed. ``--paper-batches N`` stops after N batches
instead (then the time per epoch is extrapolated from the time per batch, and
the record says so). Needs the Fashion-MNIST files under the data root.

The record (JSON) goes to ``benchmarks/results/gpu_check.json`` unless
``--output`` says otherwise. Exit status: 0 when every cell passed (or when
there is no CUDA device and none was forced), 1 when a cell failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from imalib.data.base import ArrayDataset, DataError, Splits
from imalib.device import device_name, environment
from imalib.evaluate import evaluate_robustness
from imalib.methods import build_method
from imalib.models import build_model
from imalib.norms import Norm
from imalib.paper import TABLES
from imalib.train import fit, make_optimizer

DATASETS = ("moons", "fashion_mnist", "svhn", "covid")
METHODS = ("ce", "rand", "adv", "trades", "mma", "ima", "ddn")
# Training eps per dataset (L-inf; DDN is L2-only and gets an L2 eps)
TRAIN_EPS = {"moons": 0.3, "fashion_mnist": 0.3, "svhn": 0.1, "covid": 0.3}
L2_EPS = {"moons": 1.0, "fashion_mnist": 5.0, "svhn": 2.0, "covid": 5.0}
RECORD = Path(__file__).resolve().parent / "results" / "gpu_check.json"
SMOKE_BATCH = {"moons": 64, "fashion_mnist": 32, "svhn": 32, "covid": 4}


def _generated_svhn(root: Path, n_train: int, n_test: int) -> Splits:
    from scipy.io import savemat

    from imalib.data.svhn import load_svhn

    rng = np.random.default_rng(0)
    (root / "SVHN").mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train + 8), ("test_32x32.mat", n_test)):
        savemat(root / "SVHN" / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                       "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
    return load_svhn(root, n_train=n_train, n_val=8, check_md5=False)


def _generated_covid(root: Path, per_class: int, image_size: int) -> Splits:
    from PIL import Image

    from imalib.data.covid import load_covid

    rng = np.random.default_rng(1)
    for folder, stem in (("COVID", "Covid"), ("non-COVID", "Non-Covid")):
        (root / "sars_cov2_ct" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40 + i % 7, 36 + i % 5), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / "sars_cov2_ct" / folder / f"{stem} ({i + 1}).png")
    return load_covid(root, n_train=8, image_size=image_size, expected_counts=(per_class, per_class),
                      n_test_per_class=2, n_val_per_class=1)


def _fashion(data_root: str | None, n_train: int, n_test: int) -> tuple[Splits, str]:
    from imalib.data.fashion_mnist import load_fashion_mnist

    try:
        return load_fashion_mnist(data_root, n_train=n_train, n_test=n_test), "official files"
    except DataError:
        generator = torch.Generator().manual_seed(2)
        x = torch.randint(0, 256, (n_train + n_test, 1, 28, 28), generator=generator, dtype=torch.uint8)
        y = torch.randint(0, 10, (n_train + n_test,), generator=generator)
        train, test = ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:])
        return Splits(train=train, val=test, test=test, clip=(0.0, 1.0), num_classes=10), "random images"


def smoke_splits(dataset: str, scratch: Path, data_root: str | None, image_size: int) -> tuple[Splits, str]:
    """Small splits of ``dataset`` and where they came from."""
    if dataset == "moons":
        from imalib.data.moons import load_moons

        return load_moons(128, 16, 32, noise=0.1, seed=0), "make_moons"
    if dataset == "fashion_mnist":
        return _fashion(data_root, 64, 16)
    if dataset == "svhn":
        return _generated_svhn(scratch, 64, 16), "generated .mat files"
    return _generated_covid(scratch, 8, image_size), f"generated PNG files at {image_size}x{image_size}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def smoke_cell(dataset: str, method: str, splits: Splits, device: str) -> dict[str, Any]:
    """One epoch of two training batches (with the method's end-of-epoch step) and one evaluation; raises on failure."""
    norm: Norm = "l2" if method == "ddn" else "linf"
    eps = 0.0 if method == "ce" else (L2_EPS if norm == "l2" else TRAIN_EPS)[dataset]
    torch.manual_seed(0)
    model = build_model(dataset).to(device)
    trainer = build_method(method, eps=eps, norm=norm)
    began = time.perf_counter()
    if splits.train.n_batches(SMOKE_BATCH[dataset]) != 2:
        raise RuntimeError(f"the smoke training set has {len(splits.train)} samples, not two batches")
    result = fit(model, trainer, splits.train, epochs=1, batch_size=SMOKE_BATCH[dataset],
                 optimizer=make_optimizer(model, "adam", 1e-3, 0.0), seed=0, clip=splits.clip, device=device,
                 progress=False)
    _sync(device)
    trained = time.perf_counter() - began
    if any(not math.isfinite(float(p.detach().abs().sum())) for p in model.parameters()):
        raise RuntimeError("non-finite weights after two batches")
    x, y = splits.test.inputs().to(device), splits.test.y.to(device)
    levels = list((TABLES.get((dataset, norm)) or TABLES[(dataset, "linf")]).eps)[:3]
    model.eval()
    robust = evaluate_robustness(model, x, y, norm=norm, eps_list=levels, steps=3, clip=splits.clip,
                                 batch_size=8, seed=0)
    _sync(device)
    return {"dataset": dataset, "method": method, "norm": norm, "eps": eps, "ok": True,
            "train_seconds_2_batches": trained, "eval_seconds": robust.seconds, "eval_eps": levels,
            "accuracy": robust.accuracy, "train_loss_terms": result.history[-1],
            "margins": result.margins is not None}


def paper_epoch(method: str, device: str, data_root: str | None, batches: int | None) -> dict[str, Any]:
    """One paper-profile epoch (or ``batches`` batches) of the Fashion-MNIST CNN, timed."""
    from imalib.data.fashion_mnist import load_fashion_mnist

    splits = load_fashion_mnist(data_root)
    torch.manual_seed(0)
    model = build_model("fashion_mnist").to(device)
    trainer = build_method(method, eps=0.0 if method == "ce" else 0.3, norm="linf")
    n_batches = splits.train.n_batches(128)
    _sync(device)
    began = time.perf_counter()
    fit(model, trainer, splits.train, epochs=1, batch_size=128, optimizer=make_optimizer(model, "adam", 1e-3, 0.0),
        seed=0, clip=splits.clip, device=device, progress=False, stop_after_batches=batches)
    _sync(device)
    seconds = time.perf_counter() - began
    done = n_batches if batches is None or batches >= n_batches else batches
    full = done == n_batches
    return {"method": method, "ok": True, "eps": 0.0 if method == "ce" else 0.3, "n_train": len(splits.train), "batch_size": 128, "batches": done,
            "of_batches": n_batches, "seconds": seconds,
            "seconds_per_epoch": seconds if full else seconds / done * n_batches,
            "epoch": "measured: one full epoch" + (" with Algorithm 2's margin pass" if method == "ima" else "")
            if full else f"extrapolated from {done} batches (no margin pass)"}


def _attempt(work: Callable[[], dict[str, Any]], label: dict[str, Any]) -> dict[str, Any]:
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - a failing cell is the finding: record it and go on with the others
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        print(f"  FAILED {label}: {last}", file=sys.stderr)
        return {**label, "ok": False, "error": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda when available; without CUDA nothing runs "
                                                       "unless a device (e.g. cpu) is given")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--paper-methods", dest="paper_methods", default="adv,ima",
                        help="methods for the paper-profile epoch ('' to skip it)")
    parser.add_argument("--paper-batches", dest="paper_batches", type=int, default=None,
                        help="stop the paper epoch after this many batches (default: the full epoch)")
    parser.add_argument("--image-size", dest="image_size", type=int, default=224, help="COVID image size")
    parser.add_argument("--data-root", dest="data_root", default=None)
    parser.add_argument("--output", default=str(RECORD), help=f"the record (default: {RECORD})")
    args = parser.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("gpu-check: no CUDA device here (torch.cuda.is_available() is False; see nvidia-smi and the driver "
                  "the CUDA build of torch needs): nothing checked. Run it on a GPU machine, or give --device cpu "
                  "for the parts a CPU can run.")
            return 0
        args.device = "cuda"
    device = device_name(args.device)
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(datasets) - set(DATASETS)) + sorted(set(methods) - set(METHODS))
    if unknown:
        print(f"error: unknown dataset or method {', '.join(unknown)}: use {', '.join(DATASETS + METHODS)}",
              file=sys.stderr)
        return 2
    print(f"gpu-check on {device} ({environment()['cuda'] or 'no GPU'})")
    cells = []
    with tempfile.TemporaryDirectory(prefix="imalib-gpu-check-") as scratch:
        for dataset in datasets:
            splits, source = smoke_splits(dataset, Path(scratch) / dataset, args.data_root, args.image_size)
            for method in methods:
                cell = _attempt(lambda d=dataset, m=method, s=splits: smoke_cell(d, m, s, device),  # type: ignore[misc]
                                {"dataset": dataset, "method": method})
                cell["data"] = source
                cells.append(cell)
                if cell["ok"]:
                    print(f"  ok {dataset:13s} {method:6s} 2 batches {cell['train_seconds_2_batches']:.2f} s, "
                          f"evaluation {cell['eval_seconds']:.2f} s")
    epochs = []
    for method in [m for m in args.paper_methods.split(",") if m]:
        epoch = _attempt(lambda m=method: paper_epoch(m, device, args.data_root, args.paper_batches),  # type: ignore[misc]
                         {"method": method})
        if "error" in epoch and "FashionMNIST" in epoch["error"]:
            epoch["skipped"] = "no Fashion-MNIST files under the data root"
        epochs.append(epoch)
        if "seconds_per_epoch" in epoch:
            print(f"  paper epoch fashion_mnist {method}: {epoch['seconds_per_epoch']:.1f} s per epoch "
                  f"({epoch['epoch']})")
    failed = [c for c in cells + epochs if c.get("ok") is False and "skipped" not in c]
    record: dict[str, Any] = {"name": "gpu_check", "device": device, "environment": environment(),
              "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "summary": f"{sum(c['ok'] for c in cells)}/{len(cells)} smoke cells passed on {device}; "
                         + "; ".join(f"{e['method']} {e['seconds_per_epoch']:.1f} s/epoch" for e in epochs
                                     if "seconds_per_epoch" in e),
              "smoke": cells, "paper_epoch": epochs}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(record["summary"] + f"; record in {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
