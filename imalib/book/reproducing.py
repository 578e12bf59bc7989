"""The Reproducing chapter's evidence about other machines: committed comparison records of ``imalib reproduce``
(``results/reproductions/*.json``) and the CPU-settings benchmark (``benchmarks/results/cpu_settings.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Comparison:
    """One committed re-run of a record: where each was made, the verdict and the largest difference."""

    run: str
    record_cpu: str
    rerun_cpu: str
    verdict: str
    exit_code: int
    largest: float
    masks_differ: str
    other_cpu: bool | None  # the re-run's CPU differs from the record's (None: the record does not say)

    @property
    def kind(self) -> str:
        return {0: "bit for bit", 3: "within the noise"}.get(self.exit_code, "NOT reproduced")


def _cpu(environment: dict[str, Any] | None) -> str:
    env = environment or {}
    parts = [env.get("cpu_model") or "CPU model not recorded"]
    if env.get("cpu_capability"):
        parts.append(f"ATen {env['cpu_capability']}")
    parts.append(f"MKL_CBWR {env['mkl_cbwr']}" if env.get("mkl_cbwr") else "MKL_CBWR unset or not recorded")
    return ", ".join(parts)


def _other_cpu(record: dict[str, Any] | None, rerun: dict[str, Any] | None) -> bool | None:
    """Whether two environments name different CPUs (model or ATen capability); None when the record names
    neither."""
    known = [key for key in ("cpu_model", "cpu_capability") if (record or {}).get(key)]
    if not known:
        return None
    return any((record or {}).get(key) != (rerun or {}).get(key) for key in known)


def comparisons(folder: str | Path) -> list[Comparison]:
    """Every comparison record under ``folder`` (written by ``imalib reproduce RUN --record FILE``)."""
    out = []
    for file in sorted(Path(folder).glob("*.json")):
        values = json.loads(file.read_text())
        masks = next((c["detail"] for c in values["checks"] if c["name"] == "robust.pt"), "not compared")
        out.append(
            Comparison(
                run=values["run"],
                record_cpu=_cpu(values.get("record_environment")),
                rerun_cpu=_cpu(values.get("rerun_environment")),
                verdict=values["verdict"],
                exit_code=int(values["exit_code"]),
                largest=float(values["noise"]["largest"]),
                masks_differ=masks,
                other_cpu=_other_cpu(values.get("record_environment"), values.get("rerun_environment")),
            )
        )
    return out


def comparison_table(items: list[Comparison]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                "run": c.run,
                "record made on": c.record_cpu,
                "re-run on": c.rerun_cpu,
                "another CPU": {True: "yes", False: "no", None: "not recorded"}[c.other_cpu],
                "verdict": c.kind,
                "largest accuracy difference": f"{c.largest:.4f}",
                "per-sample verdicts": c.masks_differ,
            }
            for c in items
        ]
    )
    return frame.set_index("run") if len(frame) else frame


def settings_table(file: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The CPU-settings benchmark as a table (setting x profile: whether the bits changed) and its record."""
    values = json.loads(Path(file).read_text())
    rows = values["data"]["rows"]
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(
        index="setting",
        columns="profile",
        values="bits_changed",
        aggfunc=lambda v: "changes the bits" if any(v) else "same bits",
    )
    order = list(dict.fromkeys(frame["setting"]))
    return table.reindex(order).fillna("not run"), values


@dataclass(frozen=True)
class Evidence:
    """What the Reproducing chapter quotes about other machines, read from the committed records."""

    compared: list[Comparison]
    changed: set[str] | None  # the settings that change the bits (None: no settings record)
    drift: Comparison | None  # the re-run of a record on MKL's COMPATIBLE path
    glue: dict[str, Any]

    @property
    def cross(self) -> list[Comparison]:
        return [c for c in self.compared if c.other_cpu is True]


def evidence(results_root: str | Path) -> Evidence:
    """The comparisons under ``results_root/reproductions`` and the CPU-settings benchmark record next to the
    results root (``../benchmarks/results/cpu_settings.json``); what is missing is glued as such."""
    compared = comparisons(Path(results_root) / "reproductions")
    file = Path(results_root).parent / "benchmarks" / "results" / "cpu_settings.json"
    drift = next((c for c in compared if "MKL_CBWR COMPATIBLE" in c.rerun_cpu), None)
    glue: dict[str, Any] = {
        "r_compared": comparison_table(compared) if compared else "no comparison records yet",
        "r_cross_cpu": sum(c.other_cpu is True for c in compared),
        "r_cross_cpu_bits": sum(c.other_cpu is True and c.exit_code == 0 for c in compared),
        "r_drift_run": drift.run if drift else "none",
        "r_drift_verdict": drift.verdict if drift else "none",
        "r_drift_masks": drift.masks_differ if drift else "none",
    }
    changed = None
    if file.exists():
        table, values = settings_table(file)
        changed = set(values["data"]["changed"])
        glue |= {
            "r_settings": table,
            "r_settings_cpu": values["data"]["environment"].get("cpu_model") or "not recorded",
            "r_settings_changed": ", ".join(sorted(changed)) or "none",
        }
    else:
        glue |= {k: "not measured yet" for k in ("r_settings", "r_settings_cpu", "r_settings_changed")}
    return Evidence(compared, changed, drift, glue)
