"""The committed benchmark records (``benchmarks/results/*.json``): their format, and what issue 29 asks of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imalib.book.reproducing import BENCHMARK_FIELDS, BenchmarkRecord, benchmark_records, benchmark_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_every_committed_record_has_the_format_and_names_a_script_that_exists():
    records = benchmark_records(RESULTS)
    assert {r.name for r in records} >= {"cascade", "cpu_settings", "evaluator", "ima_epoch", "moons_protocol"}
    for r in records:
        assert (ROOT / r.script).is_file(), f"{r.name}: {r.script} is not in benchmarks/"
        assert r.command.startswith(f"python benchmarks/{r.name}.py"), r.command
        assert r.environment["cpu_capability"] and r.environment["torch"] and r.code["commit"]
        assert len(str(r.code["commit"])) == 40 and r.measured[:2] == "20"
    table = benchmark_table(RESULTS)
    assert not isinstance(table, str) and list(table.index) == [r.name for r in records]


def test_the_cascade_gives_the_worst_of_both_of_autoattack_on_every_image():
    record = BenchmarkRecord.read(RESULTS / "cascade.json")
    assert {"fashion_mnist", "moons"} <= set(record.data)
    for row in record.data.values():
        assert row["masks_equal"] and sum(row["masks_differ"]) == 0, row["row"]
        assert sum(row["cascade_attacked"]) < sum(row["full_attacked"])
        assert row["speedup"] == pytest.approx(row["full_s"] / row["cascade_s"])
        assert len(row["package_starts_moved"]) == len(row["eps"]) and row["package_starts_moved"][0] == 0
        assert all(w <= min(a, p) for w, a, p in zip(row["worst_of_both"], row["autoattack_alone"], row["pgd"],
                                                     strict=True))


def test_a_record_without_the_machine_or_the_commit_is_refused_with_the_command(tmp_path):
    good = json.loads((RESULTS / "ima_epoch.json").read_text())
    for name in ("environment", "code"):
        broken = dict(good)
        broken.pop(name)
        file = tmp_path / "ima_epoch.json"
        file.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=r"lacks \['" + name + r"'\].*python benchmarks/ima_epoch.py"):
            BenchmarkRecord.read(file)
    capability = {**good, "environment": {**good["environment"], "cpu_capability": None}}
    (tmp_path / "ima_epoch.json").write_text(json.dumps(capability))
    with pytest.raises(ValueError, match="CPU capability"):
        BenchmarkRecord.read(tmp_path / "ima_epoch.json")
    (tmp_path / "other.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="names itself 'ima_epoch'"):
        BenchmarkRecord.read(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a readable benchmark record"):
        BenchmarkRecord.read(tmp_path / "bad.json")
    assert set(BENCHMARK_FIELDS) <= set(good)
