"""Which CPU settings change the bits of training (issue 28): one record per profile, re-run under each setting.

A Moons record is trained once at the default settings, then `imalib reproduce` re-runs it in a fresh process
under each candidate setting (thread count, the SIMD level of ATen's kernels, oneDNN's ISA, MKL's conditional
numerical reproducibility branch, mkldnn off, deterministic algorithms). A setting "changes the bits" when the
re-run's training log or weights differ from the record's; the verdict line says whether the evaluation moved
too. The record goes to benchmarks/results/cpu_settings.json with the machine it ran on.

Usage: python benchmarks/cpu_settings.py [--profiles smoke cpu] [--method ce]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import record

# name -> (environment variables, Python run before the re-run)
SETTINGS: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, ""),
    "OMP_NUM_THREADS=2": ({"OMP_NUM_THREADS": "2"}, ""),
    "ATEN_CPU_CAPABILITY=default": ({"ATEN_CPU_CAPABILITY": "default"}, ""),
    "ATEN_CPU_CAPABILITY=avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, ""),
    "ONEDNN_MAX_CPU_ISA=AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, ""),
    "MKL_CBWR=COMPATIBLE": ({"MKL_CBWR": "COMPATIBLE"}, ""),
    "MKL_CBWR=AVX": ({"MKL_CBWR": "AVX"}, ""),
    "MKL_CBWR=AUTO": ({"MKL_CBWR": "AUTO"}, ""),
    "mkldnn off": ({}, "torch.backends.mkldnn.enabled = False"),
    "deterministic algorithms": ({}, "torch.use_deterministic_algorithms(True)"),
}
# the cpu profile takes minutes per re-run: the settings that can matter there
CPU_SUBSET = ["default", "OMP_NUM_THREADS=2", "ATEN_CPU_CAPABILITY=default", "MKL_CBWR=COMPATIBLE", "mkldnn off"]
PYTHON = Path(sys.executable)
ROOT = Path(__file__).resolve().parents[1]


def rerun(run: Path, setting: str) -> dict[str, object]:
    env_vars, prelude = SETTINGS[setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    code = f"import sys, torch\n{prelude}\nfrom imalib.reproduce import main\nsys.exit(main([{str(run)!r}]))"
    began = time.perf_counter()
    done = subprocess.run([str(PYTHON), "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - began
    lines = done.stdout.strip().splitlines()
    differ = [line.split(":")[0].split()[-1] for line in lines if line.strip().startswith(("note", "DIFF"))]
    return {
        "setting": setting,
        "bits_changed": any(name in ("log", "model.pt") for name in differ),
        "differs": differ,
        "verdict": lines[-1] if lines else done.stderr.strip()[-300:],
        "exit_code": done.returncode,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", nargs="+", default=["smoke", "cpu"], choices=["smoke", "cpu"])
    parser.add_argument("--method", default="ce")
    args = parser.parse_args()
    import torch

    from imalib.device import environment
    from imalib.profiles import table_configs
    from imalib.runs import run_experiment

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imalib-cpu-settings-") as scratch:
        for profile in args.profiles:
            (config,) = table_configs("moons", "linf", profile, methods=[args.method])
            run = run_experiment(config, results_root=Path(scratch), device="cpu", progress=False).path
            for setting in SETTINGS if profile == "smoke" else CPU_SUBSET:
                row = {"profile": profile, "run": run.name, **rerun(run, setting)}
                print(json.dumps(row))
                rows.append(row)
    changed = sorted({r["setting"] for r in rows if r["bits_changed"]})
    record(
        "cpu_settings",
        f"settings that change the bits of Moons training on this CPU: {', '.join(changed) or 'none'}",
        "find what makes CPU training machine-dependent (issue 28)",
        {"rows": rows, "environment": environment(), "changed": changed},
    )


if __name__ == "__main__":
    main()
