"""The Reproducing chapter's committed evidence: comparison records of `imalib reproduce --record` and the
CPU-settings benchmark record have the format the chapter reads, and say what their verdict lines say."""

from __future__ import annotations

import json

from imalib.book import reproducing
from imalib.book.execute import ROOT

COMPARISONS = ROOT / "results" / "reproductions"
SETTINGS = ROOT / "benchmarks" / "results" / "cpu_settings.json"


def test_every_committed_comparison_is_readable_and_its_verdict_matches_its_exit_code():
    items = reproducing.comparisons(COMPARISONS)
    assert items, f"no comparison record under {COMPARISONS}"
    for c in items:
        assert c.exit_code in (0, 1, 3), c
        assert c.verdict.startswith({0: "reproduced bit for bit", 3: "reproduced within the noise",
                                     1: "NOT reproduced"}[c.exit_code]), c
        assert (c.largest == 0) or c.exit_code != 0, c     # bit for bit means no accuracy moved
    table = reproducing.comparison_table(items)
    assert list(table.index) == [c.run for c in items] and "verdict" in table.columns


def test_a_comparison_file_written_by_reproduce_round_trips(tmp_path):
    from imalib.reproduce import Check, NoiseVerdict, write_comparison

    record = {"dataset": "moons", "label": "ce", "seed": 0, "n_test": 10, "eps": [0.0], "accuracy": [1.0],
              "environment": {"cpu_capability": "AVX512", "cpu_model": "Some CPU"}}
    noise = NoiseVerdict(True, 0.1, "accuracy at eps 0: 1.0000 -> 0.9000", 0.3, "the binomial SE of 10 test samples",
                         ())
    write_comparison(tmp_path / "c.json", tmp_path / "ce-linf-0", record, [Check("accuracy", False, "x")], noise,
                     "reproduced within the noise (...)", 3)
    (item,) = reproducing.comparisons(tmp_path)
    assert item.kind == "within the noise" and item.largest == 0.1 and item.other_cpu is not None
    assert "Some CPU" in item.record_cpu and item.masks_differ == "not compared"


def test_the_cpu_settings_record_has_every_setting_and_its_default_keeps_the_bits():
    table, values = reproducing.settings_table(SETTINGS)
    rows = values["data"]["rows"]
    assert {r["setting"] for r in rows} >= {"default", "OMP_NUM_THREADS=2", "MKL_CBWR=COMPATIBLE"}
    for r in rows:
        if r["setting"] == "default":
            assert not r["bits_changed"] and r["verdict"] == "reproduced bit for bit", r
        assert r["bits_changed"] == any(name in ("log", "model.pt") for name in r["differs"]), r
    assert sorted(values["data"]["changed"]) == sorted({r["setting"] for r in rows if r["bits_changed"]})
    assert json.loads(SETTINGS.read_text())["data"]["environment"]["mkl_cbwr"]
