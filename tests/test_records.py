"""The typed result record: every committed result.json loads and writes back byte for byte; bad records fail."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from imalib.config import RunConfig
from imalib.errors import ConfigError
from imalib.records import AutoAttackEntry, EpochLog, ResultRecord, collect, read_record

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = sorted(RESULTS.rglob("result.json"))


def canonical(values: object) -> str:
    """The text imalib.io.write_json writes."""
    return json.dumps(values, indent=1, sort_keys=True, allow_nan=False) + "\n"


def test_there_are_committed_records() -> None:
    assert len(COMMITTED) >= 60  # Moons and Fashion-MNIST runs are committed


@pytest.mark.parametrize("file", COMMITTED, ids=[str(f.relative_to(RESULTS)) for f in COMMITTED])
def test_every_committed_record_round_trips_losslessly(file: Path) -> None:
    text = file.read_text()
    record = read_record(file)
    assert canonical(record.to_json()) == text  # the very bytes of the committed file
    assert ResultRecord.from_json(record.to_json()) == record
    assert record.config.hash() == record.config_hash
    assert record.label == record.config.label and len(record.history) == record.config.epochs
    assert record.final.epoch == record.config.epochs


def test_typed_fields() -> None:
    record = read_record(COMMITTED[0])
    assert isinstance(record.eps, tuple) and isinstance(record.history[0], EpochLog)
    assert record.accuracy_at(record.eps[-1]) == record.accuracy[-1]
    with pytest.raises(ConfigError, match="is not an evaluation level"):
        record.accuracy_at(123.0)
    with pytest.raises(AttributeError):
        record.seed = 3  # type: ignore[misc]  # frozen


def test_collect_filters() -> None:
    everything = collect(RESULTS)
    assert len(everything) == len(COMMITTED)
    moons = collect(RESULTS, dataset="moons")
    l2 = collect(RESULTS, dataset="fashion_mnist", norm="l2")
    cpu = collect(RESULTS, profile="cpu")
    assert moons and all(r.dataset == "moons" for r in moons)
    assert l2 and all(r.dataset == "fashion_mnist" and r.norm == "l2" for r in l2)
    assert cpu and all(r.profile == "cpu" for r in cpu)
    assert len(collect(RESULTS, dataset="svhn")) == 0


def test_fields_a_newer_record_adds_are_kept() -> None:
    """A record with the device it ran on and more environment flags (as the GPU work records) round-trips."""
    values = json.loads(COMMITTED[0].read_text())
    values["device"] = "cuda:0"
    values["environment"].update(cuda_version="13.0", evaluation_tf32=False)
    record = ResultRecord.from_json(values)
    added = {key: record.environment.extra.get(key) for key in ("cuda_version", "evaluation_tf32")}
    assert record.device == "cuda:0" and added == {"cuda_version": "13.0", "evaluation_tf32": False}
    assert canonical(record.to_json()) == canonical(values)


def _one() -> dict[str, object]:
    return json.loads(COMMITTED[0].read_text())


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda v: v.pop("accuracy"), "has no 'accuracy'"),
    (lambda v: v.update(colour="red"), "unknown fields ['colour']"),
    (lambda v: v.update(seed="0"), "seed='0' has type str"),
    (lambda v: v.update(accuracy=[0.5]), "differ in length"),
    (lambda v: v["environment"].pop("torch"), "lacks ['torch']"),  # type: ignore[attr-defined]
    (lambda v: v.update(device=0), "device=0 has type int"),
    (lambda v: v["history"][0].update(ce="x"), "loss term ce='x'"),  # type: ignore[index]
])
def test_bad_records_fail_with_one_clear_line(change, fragment: str, tmp_path: Path) -> None:
    values = _one()
    change(values)
    file = tmp_path / "moons" / "run" / "result.json"
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(values))
    with pytest.raises(ConfigError) as info:
        collect(tmp_path)
    message = str(info.value)
    assert fragment in message and str(file) in message and "\n" not in message


def test_not_json(tmp_path: Path) -> None:
    file = tmp_path / "result.json"
    file.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_record(file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect(tmp_path / "nowhere")



@pytest.mark.parametrize("file", COMMITTED, ids=[str(f.relative_to(RESULTS)) for f in COMMITTED])
def test_every_committed_config_hashes_to_its_directory_name(file: Path) -> None:
    """A new field in RunConfig would change every hash and so every run directory: this test catches it."""
    config = RunConfig.from_dict(json.loads((file.parent / "config.json").read_text()))
    assert file.parent.name == f"{config.label}-{config.norm}-{config.hash()}"


def test_autoattack_entries_round_trip_and_bad_ones_fail() -> None:
    record = read_record(COMMITTED[0])
    n = len(record.eps)
    entry = AutoAttackEntry(eps=record.eps, accuracy=record.accuracy, worst_of_both=record.accuracy,
                            pgd_accuracy=record.accuracy, n_images=record.n_test,
                            settings={"version": "custom", "attacks": ["apgd-ce", "fab"]}, seconds=2.5,
                            level_seconds=(0.0,) * n)
    subset = replace(entry, n_images=3, indices=(0, 4, 9))
    both = replace(record, autoattack=entry, autoattack_standard=subset)
    values = json.loads(canonical(both.to_json()))
    assert ResultRecord.from_json(values) == both and values["autoattack_standard"]["indices"] == [0, 4, 9]
    assert "indices" not in values["autoattack"]
    broken = dict(values, autoattack=dict(values["autoattack"], accuracy=[0.5]))
    with pytest.raises(ConfigError, match="differ in length"):
        ResultRecord.from_json(broken)
    extra = dict(values, autoattack=dict(values["autoattack"], colour="red"))
    with pytest.raises(ConfigError, match="unknown fields"):
        ResultRecord.from_json(extra)
