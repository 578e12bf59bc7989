"""Issue 29, target 1: the evaluation cascade against AutoAttack on every image, per row, in one process.

The worst of PGD and AutoAttack only needs AutoAttack on the images PGD left robust. Per row this runs, on a
copy of the run directory (the committed files stay as they are):

- ``full``: AutoAttack (the custom set, per-image random starts) on every image classified correctly on clean
  data, as every committed record was measured, then the worst of both with the run's PGD;
- ``cascade``: the default evaluation path, AutoAttack only on PGD's survivors at each eps.

It records both wall times, the images attacked per eps, and the number of (eps, image) pairs where the two
worst-of-both masks differ (the target: none). A third pass, AutoAttack on every image with the package's own
random starts (one draw per batch, as the committed records were measured), counts how many worst-of-both outcomes
the change of starts moves on the same model. Where the run's committed ``autoattack.pt`` has the same PGD outcome,
it is compared too.

Rows: the Fashion-MNIST `cpu` IMA L-inf run (seed 0; its weights trained into benchmarks/.trained/ if absent:
about 10 minutes) and the Moons `cpu` IMA run (noise 0.1, seed 0; committed weights).
Usage: python benchmarks/cascade.py [--rows fashion_mnist moons] [--no-package-starts]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RUNS, record, trained_run

from imalib.io import load_torch
from imalib.profiles import table_configs
from imalib.records import RESULT_FILE, read_record
from imalib.autoattack import evaluate_autoattack
from imalib.runs import add_autoattack, evaluate_run, load_autoattack, load_robustness, load_run, run_dir, splits_of

ROWS = {
    "fashion_mnist": lambda: table_configs("fashion_mnist", "linf", "cpu", methods=["ima"])[0],
    "moons": lambda: table_configs("moons", "linf", "cpu", seed=0, methods=["ima"], data_params={"noise": 0.1})[0],
}


def package_starts(path: Path, pgd: torch.Tensor) -> torch.Tensor:
    """The worst of both per image with AutoAttack on every image and the package's one draw per batch."""
    run = load_run(path)
    splits = splits_of(run.config)
    x, y = splits.test.inputs(), splits.test.y
    with torch.no_grad():
        num_classes = int(run.model(x[:1]).shape[1])
    result = evaluate_autoattack(run.model, x, y, norm=run.config.norm, eps_list=run.record.eps, clip=splits.clip,
                                 num_classes=num_classes, seed=run.config.seed, batch_size=run.config.eval_batch,
                                 per_image_starts=False)
    return result.robustness.robust & pgd


def compare(name: str, with_package: bool) -> dict[str, Any]:
    config = ROWS[name]()
    source = trained_run(config)
    committed = run_dir(config, RUNS)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / source.name
        shutil.copytree(source, path, ignore=shutil.ignore_patterns("autoattack*.pt"))
        if not (path / RESULT_FILE).exists():
            evaluate_run(path, autoattack=False)  # the paper's PGD first (a run trained by the benchmark)
        pgd = load_robustness(path).robust
        began = time.perf_counter()
        full = add_autoattack(path, full=True).autoattack
        full_s = time.perf_counter() - began
        full_mask = load_autoattack(path)
        began = time.perf_counter()
        cascade = add_autoattack(path).autoattack
        cascade_s = time.perf_counter() - began
        cascade_mask = load_autoattack(path)
        package_mask = package_starts(path, pgd) if with_package else None
    assert full is not None and cascade is not None and full_mask is not None and cascade_mask is not None
    differ = (full_mask & pgd) ^ cascade_mask
    out: dict[str, Any] = {
        "row": f"{config.dataset} {config.label} {config.norm} seed {config.seed} ({config.profile})",
        "run": str(committed.relative_to(RUNS.parent)),
        "n_images": int(pgd.shape[1]),
        "eps": list(full.eps),
        "attacks": list(full.settings["attacks"]),
        "full_s": full_s,
        "cascade_s": cascade_s,
        "speedup": full_s / cascade_s,
        "full_level_s": list(full.level_seconds),
        "cascade_level_s": list(cascade.level_seconds),
        "full_attacked": list(full.attacked or ()),
        "cascade_attacked": list(cascade.attacked or ()),
        "worst_of_both": list(cascade.worst_of_both),
        "autoattack_alone": list(full.accuracy or ()),
        "pgd": list(full.pgd_accuracy),
        "masks_differ": [int(v) for v in differ.sum(dim=1)],
        "masks_equal": bool(not differ.any()),
    }
    if package_mask is not None:  # the same model and PGD outcome, AutoAttack with the package's own starts
        moved = package_mask ^ cascade_mask
        out["package_starts_moved"] = [int(v) for v in moved.sum(dim=1)]
        out["package_starts_worst_of_both"] = [float(v) for v in package_mask.float().mean(dim=1)]
    old_file = committed / "autoattack.pt"
    if old_file.exists() and (committed / "robust.pt").exists():
        old_pgd = load_torch(committed / "robust.pt")
        out["same_pgd_as_committed"] = bool(torch.equal(old_pgd, pgd))
        old_entry = read_record(committed / RESULT_FILE).autoattack
        out["committed_starts"] = None if old_entry is None else old_entry.settings.get("starts", "package")
        if out["same_pgd_as_committed"]:
            moved = (load_torch(old_file) & pgd) ^ cascade_mask
            out["starts_moved"] = [int(v) for v in moved.sum(dim=1)]
            out["committed_worst_of_both"] = None if old_entry is None else list(old_entry.worst_of_both)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=["fashion_mnist", "moons"])
    parser.add_argument("--no-package-starts", action="store_true",
                        help="skip the third pass: AutoAttack on every image with the package's own random starts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {name: compare(name, not args.no_package_starts) for name in args.rows}
    summary = "; ".join(
        f"{v['row']}: AutoAttack on every image {v['full_s']:.0f} s, cascade {v['cascade_s']:.0f} s "
        f"({v['speedup']:.2f}x), worst-of-both masks {'equal' if v['masks_equal'] else 'DIFFER'} "
        f"({sum(v['masks_differ'])} of {v['n_images'] * len(v['eps'])} (eps, image) pairs differ)"
        + (f"; the package's own starts (one draw per batch) instead move {sum(v['package_starts_moved'])}"
           if "package_starts_moved" in v else "")
        + (f"; against the committed record (package starts, same PGD) the starts moved {sum(v['starts_moved'])}"
           if "starts_moved" in v else "")
        for v in rows.values()
    )
    record("cascade", summary, "worst-of-both masks equal; cascade faster than AutoAttack on every image", rows)


if __name__ == "__main__":
    main()
