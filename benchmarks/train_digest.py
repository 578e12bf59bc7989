"""A digest of four Moons smoke runs (IMA paper and fused, MMA, adv): to check that a refactoring changes no number.

Trains and evaluates each run from scratch in a temporary results root and writes, per run, the accuracies,
the envelope, the training log without wall times, the margin histogram and SHA-256 digests of the final
weights and margins. Run it on two versions of the code and compare the two files byte for byte:

    PYTHONPATH=<checkout> python benchmarks/train_digest.py digest.json      (about a minute on one thread)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from imalib.io import load_torch
from imalib.profiles import table_configs
from imalib.runs import run_experiment

RUNS = (("ima", {}), ("ima", {"margin_mode": "fused"}), ("mma", {}), ("adv", {}))


def digest(results_root: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for method, params in RUNS:
        config = table_configs("moons", "linf", "smoke", methods=[method], method_params={method: params})[0]
        run = run_experiment(config, results_root=results_root, progress=False)
        result = run.record.to_json()  # the result.json dict
        margins_file = run.path / "margins.pt"
        margins = load_torch(margins_file).numpy().tobytes() if margins_file.exists() else b""
        weights = b"".join(t.numpy().tobytes() for t in load_torch(run.path / "model.pt").values())
        out[f"{method}{params}"] = {
            "acc": result["accuracy"], "env": result["envelope"], "margins": result["margins"],
            "hist": [{k: v for k, v in entry.items() if k != "seconds"} for entry in result["history"]],
            "margins_sha": hashlib.sha256(margins).hexdigest(), "weights_sha": hashlib.sha256(weights).hexdigest(),
        }
    return out


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        values = digest(Path(root))
    Path(sys.argv[1]).write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    for name, entry in values.items():
        print(name, entry["acc"][-1], str(entry["margins_sha"])[:12], str(entry["weights_sha"])[:12])  # type: ignore[index]


if __name__ == "__main__":
    main()
