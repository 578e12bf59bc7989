"""The Reproducing chapter's evidence about other machines: committed comparison records of ``imalib reproduce``
(``results/reproductions/*.json``), the CPU-settings benchmark (``benchmarks/results/cpu_settings.json``) and
the table of every committed benchmark record (``benchmarks/results/*.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


SETTINGS_MACHINES = "machines"  # benchmarks/results/machines/cpu_settings-*.json: the same benchmark on other CPUs


def settings_files(folder: str | Path) -> list[Path]:
    """The CPU-settings records in ``folder`` (``benchmarks/results``): this project's latest one first, then those
    kept from other machines (``machines/cpu_settings-*.json``)."""
    folder = Path(folder)
    latest = [folder / "cpu_settings.json"] if (folder / "cpu_settings.json").exists() else []
    return latest + sorted((folder / SETTINGS_MACHINES).glob("cpu_settings-*.json"))


def machines_table(files: list[Path]) -> pd.DataFrame:
    """Settings x (CPU, profile): whether each setting changed the bits, one column pair per machine."""
    parts = []
    for file in files:
        table, values = settings_table(file)
        env = values["data"]["environment"]
        cpu = f"{env.get('cpu_model') or 'CPU not recorded'} ({env.get('cpu_capability') or '?'})"
        parts.append(table.rename(columns=lambda profile, cpu=cpu: f"{cpu}, {profile}"))
    frame = pd.concat(parts, axis=1)
    return frame.fillna("not run")


@dataclass(frozen=True)
class Evidence:
    """What the Reproducing chapter quotes about other machines, read from the committed records."""

    compared: list[Comparison]
    changed: set[str] | None  # the settings that change the bits (None: no settings record)
    drift: Comparison | None  # the re-run of a record on MKL's COMPATIBLE path
    glue: dict[str, Any]
    changed_on: dict[str, set[str]] = field(default_factory=dict)  # CPU model -> settings that changed the bits
    intel: Comparison | None = None  # a record re-run on an Intel CPU at MKL_CBWR=AVX2
    amd: Comparison | None = None  # the same record re-run on an AMD CPU at MKL_CBWR=AVX2

    @property
    def cross(self) -> list[Comparison]:
        return [c for c in self.compared if c.other_cpu is True]


def evidence(results_root: str | Path) -> Evidence:
    """The comparisons under ``results_root/reproductions`` and the CPU-settings benchmark records next to the
    results root (``../benchmarks/results/cpu_settings.json`` and ``machines/``); what is missing is glued as
    such. ``changed_on`` holds, per CPU model, the settings that changed the bits there."""
    compared = comparisons(Path(results_root) / "reproductions")
    files = settings_files(Path(results_root).parent / "benchmarks" / "results")
    drift = next((c for c in compared if "MKL_CBWR COMPATIBLE" in c.rerun_cpu), None)
    glue: dict[str, Any] = {
        "r_compared": comparison_table(compared) if compared else "no comparison records yet",
        "r_cross_cpu": sum(c.other_cpu is True for c in compared),
        "r_cross_cpu_bits": sum(c.other_cpu is True and c.exit_code == 0 for c in compared),
        "r_drift_run": drift.run if drift else "none",
        "r_drift_verdict": drift.verdict if drift else "none",
        "r_drift_masks": drift.masks_differ if drift else "none",
    }
    # the same record re-run at imalib's MKL_CBWR=AVX2 on an Intel CPU and on an AMD one (the vendor question)
    intel = next((c for c in compared if "Intel" in c.rerun_cpu and "MKL_CBWR AVX2" in c.rerun_cpu), None)
    same_run = [c for c in compared if intel is not None and c.run == intel.run]
    amd = next((c for c in same_run if "AMD" in c.rerun_cpu and "MKL_CBWR AVX2" in c.rerun_cpu), None)
    glue |= {
        "r_intel_run": intel.run if intel else "none",
        "r_intel_verdict": intel.verdict if intel else "none",
        "r_intel_masks": intel.masks_differ if intel else "none",
        "r_intel_amd_kind": amd.kind if amd else "not re-run on an AMD CPU",
    }
    changed = None
    changed_on: dict[str, set[str]] = {}
    for file in files:
        values = json.loads(file.read_text())
        changed_on[values["data"]["environment"].get("cpu_model") or "not recorded"] = set(values["data"]["changed"])
    if files:
        _, latest = settings_table(files[0])
        changed = set(latest["data"]["changed"])
        glue |= {
            "r_settings": machines_table(files),
            "r_settings_cpu": latest["data"]["environment"].get("cpu_model") or "not recorded",
            "r_settings_cpus": " and ".join(changed_on),
            "r_settings_changed": ", ".join(sorted(changed)) or "none",
        }
        for cpu, names in changed_on.items():
            glue[f"r_settings_changed_{_slug(cpu)}"] = ", ".join(sorted(names)) or "none"
    else:
        missing = ("r_settings", "r_settings_cpu", "r_settings_cpus", "r_settings_changed")
        glue |= {k: "not measured yet" for k in missing}
    return Evidence(compared, changed, drift, glue, changed_on, intel, amd)


def _slug(cpu: str) -> str:
    """A glue-name part for a CPU model: 'AMD EPYC' -> 'amd_epyc', 'Intel(R) Xeon(R) Processor' -> 'intel_xeon'."""
    words = [w for w in cpu.replace("(R)", "").replace("(TM)", "").lower().split() if w.isalnum()]
    return "_".join(w for w in words if w not in ("processor", "cpu"))[:40]


BENCHMARK_FIELDS = ("name", "summary", "target", "data", "command", "measured", "machine", "environment", "code")


@dataclass(frozen=True)
class BenchmarkRecord:
    """One committed benchmark record, as ``benchmarks/common.record`` writes it.

    ``environment`` is :func:`imalib.device.environment` of the machine that ran it (CPU model, SIMD
    capability, library versions, kernel settings); ``code`` the commit (with a flag for uncommitted changes)
    and the versions of the packages compared against; ``measured`` the UTC time it was written.
    """

    name: str
    summary: str
    target: str
    data: dict[str, Any]
    command: str
    measured: str
    environment: dict[str, Any]
    code: dict[str, Any]

    @classmethod
    def read(cls, file: str | Path) -> BenchmarkRecord:
        file = Path(file)
        fix = f"run it again: `{_rerun(file)}`"
        try:
            values = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{file} is not a readable benchmark record ({error}); {fix}") from None
        missing = [name for name in BENCHMARK_FIELDS if name not in values] if isinstance(values, dict) else ["all"]
        if missing:
            raise ValueError(f"{file} lacks {missing} (written before records carried them?); {fix}")
        if values["name"] != file.stem:
            raise ValueError(f"{file} names itself {values['name']!r}, not {file.stem!r}; {fix}")
        for name in ("capability", "model"):
            if not values["environment"].get(f"cpu_{name}"):
                raise ValueError(f"{file}: its environment does not say the CPU {name}; {fix}")
        if not values["code"].get("commit"):
            raise ValueError(f"{file}: its code entry has no commit; {fix}")
        return cls(**{name: values[name] for name in BENCHMARK_FIELDS if name != "machine"})

    @property
    def script(self) -> str:
        """The benchmark script's path in the repository, from the command."""
        return self.command.split()[1]


def _rerun(file: Path) -> str:
    return f"python benchmarks/{file.stem}.py"


def benchmark_records(folder: str | Path) -> list[BenchmarkRecord]:
    """Every ``*.json`` record in ``folder`` (``benchmarks/results``), in name order."""
    return [BenchmarkRecord.read(path) for path in sorted(Path(folder).glob("*.json"))]


def benchmark_table(folder: str | Path) -> pd.DataFrame | str:
    """One row per committed benchmark record: what it measured, its target, where and on which code it ran."""
    records = benchmark_records(folder)
    if not records:
        return "no benchmark records yet: run `make bench`"
    rows = [
        {
            "benchmark": r.name,
            "measured": r.summary,
            "target": r.target,
            "machine": f"{_cpu(r.environment)}, {r.environment.get('torch_threads')} thread(s)",
            "versions": f"torch {r.environment.get('torch')}, code {str(r.code['commit'])[:7]}"
            + (" + changes" if r.code.get("uncommitted_changes") else ""),
            "when": r.measured[:10],
            "command": f"`{r.command}`",
        }
        for r in records
    ]
    return pd.DataFrame(rows).set_index("benchmark")


def speed_values(folder: str | Path) -> dict[str, Any]:
    """Glue-ready numbers of the speed section from the cascade and IMA-epoch records in ``folder``
    (``r_cascade_*``, ``r_ima_*``); a record not there yet is glued as 'not measured yet'."""
    folder = Path(folder)
    glue: dict[str, Any] = {}
    cascade_file, epoch_file = folder / "cascade.json", folder / "ima_epoch.json"
    if cascade_file.exists():
        rows = BenchmarkRecord.read(cascade_file).data
        table = pd.DataFrame(
            [
                {
                    "row": row["row"],
                    "test images": row["n_images"],
                    "AutoAttack on every image (s)": round(row["full_s"]),
                    "cascade (s)": round(row["cascade_s"]),
                    "speed-up": f"{row['speedup']:.2f}x",
                    "images attacked (every image / cascade)": f"{sum(row['full_attacked'])} / "
                    f"{sum(row['cascade_attacked'])}",
                    "(eps, image) pairs whose worst of both differs": f"{sum(row['masks_differ'])} of "
                    f"{row['n_images'] * len(row['eps'])}",
                }
                for row in rows.values()
            ]
        ).set_index("row")
        glue["r_cascade_table"] = table
        for key, row in rows.items():
            top = len(row["eps"]) - 1
            glue |= {
                f"r_cascade_{key}_speedup": f"{row['speedup']:.2f}",
                f"r_cascade_{key}_full": f"{row['full_s']:.0f} s",
                f"r_cascade_{key}_cascade": f"{row['cascade_s']:.0f} s",
                f"r_cascade_{key}_differ": str(sum(row["masks_differ"])),
                f"r_cascade_{key}_attacked": f"{sum(row['cascade_attacked'])} (eps, image) pairs instead of "
                f"{sum(row['full_attacked'])}",
                f"r_cascade_{key}_top": f"{row['eps'][top]:g}",
                f"r_cascade_{key}_top_full": f"{row['full_level_s'][top]:.0f} s",
                f"r_cascade_{key}_top_cascade": f"{row['cascade_level_s'][top]:.0f} s",
                f"r_cascade_{key}_moved": _moved(row),
            }
        glue["r_cascade_data"] = rows
    else:
        glue["r_cascade_table"] = "not measured yet: run `python benchmarks/cascade.py`"
    if epoch_file.exists():
        data = BenchmarkRecord.read(epoch_file).data
        moons, parts = data["moons_mlp"], data["moons_mlp"].get("breakdown", {})
        glue |= {
            "r_ima_ratio": f"{moons['fused_ratio']:.2f}",
            "r_ima_range": f"{moons['fused_ratio_range'][0]:.2f}–{moons['fused_ratio_range'][1]:.2f}",
            "r_ima_repeats": str(len(moons["times_s"]["adv"])),
            "r_ima_cnn_ratio": f"{data['fashion_mnist_cnn']['fused_ratio']:.2f}",
            "r_ima_data": data,
        }
        if parts:
            glue |= {
                "r_ima_bpgd_ms": f"{parts['bpgd_ms_per_batch']:.2f}",
                "r_ima_pgd_ms": f"{parts['pgd20_ms_per_batch']:.2f}",
                "r_ima_bisection_ms": f"{parts['bisection_ms_per_batch']:.2f}",
                "r_ima_forward_ms": f"{parts['forward_ms_per_batch']:.3f}",
                "r_ima_bisection_share": f"{parts['bisection_share_of_extra']:.0%}",
            }
    return glue


def _moved(row: dict[str, Any]) -> str:
    """What the package's own random starts (one draw per batch) change against the per-image ones on the row."""
    notes = []
    if "package_starts_moved" in row:
        notes.append(
            f"With the package's own random starts (one draw per batch, the way the committed image records were "
            f"measured), "
            f"AutoAttack on every image of the same model gives another worst of both on "
            f"{sum(row['package_starts_moved'])} (eps, image) pairs: that is how much an image's outcome depends "
            f"on its start, and why the cascade needs the per-image starts to match image by image."
        )
    if "starts_moved" in row:
        notes.append(
            f"Against the committed record of this row, measured with the package's own random starts on the same "
            f"PGD outcome, the per-image starts moved {sum(row['starts_moved'])} (eps, image) outcomes of the worst "
            f"of both."
        )
    elif row.get("same_pgd_as_committed") is False:
        notes.append(
            "The committed record of this row cannot be compared with it image by image: the row retrained for the "
            "benchmark on this machine ended with other weights than the committed one (its PGD outcome differs)."
        )
    return " ".join(notes) or "The row was not compared with the package's own random starts."
