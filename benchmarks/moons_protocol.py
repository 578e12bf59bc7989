"""Target 3: the complete Moons reproduction (5 methods, 30 epochs, the paper's evaluation) in one command.

Runs Table 1 at the paper's protocol (seed 0) into a temporary results folder with two one-thread worker
processes, and reports the wall time and the peak resident memory of the largest process.
Usage: python benchmarks/moons_protocol.py
"""

from __future__ import annotations

import resource
import tempfile
import time

from common import record
from imalib.experiments import run_many
from imalib.profiles import table_configs


def main() -> None:
    configs = table_configs("moons", "linf", "paper", seed=0, data_params={"noise": 0.1})
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        run_many(configs, results_root=folder, workers=2)
        seconds = time.perf_counter() - began
    peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    record("moons_protocol", f"5 methods x 30 epochs + evaluation: {seconds / 60:.1f} min, peak memory {peak_mb:.0f} MB",
           "under 5 minutes", {"seconds": seconds, "peak_rss_mb": peak_mb})


if __name__ == "__main__":
    main()
