"""The verdict's checks on the claims issue 27 added: they hold on the committed records, and each one fails
when a copy of the records is altered so that its sentence is no longer true (and only that one fails)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imalib.book import verdict
from imalib.book.execute import ROOT

RESULTS = ROOT / "results"
SEEDS = [0, 1, 2]
NOISE_LEVELS = [0.025, 0.05, 0.1, 0.2]

pytestmark = pytest.mark.skipif(
    not (RESULTS / "moons").is_dir() or not (RESULTS / "fashion_mnist").is_dir(),
    reason="needs the committed Moons and Fashion-MNIST records",
)


def copy_records(tmp_path: Path) -> Path:
    target = tmp_path / "results"
    for dataset in ("moons", "fashion_mnist"):
        shutil.copytree(RESULTS / dataset, target / dataset, ignore=shutil.ignore_patterns("model.pt", "*.ckpt"))
    return target


def runs(root: Path, dataset: str, label: str, norm: str = "linf", **data_params: float) -> list[Path]:
    """The run directories of one row (the default method parameters), by the label of their config."""
    found = []
    for path in sorted((root / dataset).glob(f"{label}-{norm}-*")):
        config = json.loads((path / "config.json").read_text())
        if config["method_params"] or config["profile"] != "cpu":
            continue
        if all(config["data_params"].get(k) == v for k, v in data_params.items()):
            found.append(path)
    assert found, f"no {label} run under {root / dataset} with {data_params}"
    return found


def edit(path: Path, change) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def test_the_new_claims_hold_on_the_records_and_each_fails_alone_on_altered_copies(tmp_path):
    page = verdict.verdict_page(str(RESULTS), SEEDS, NOISE_LEVELS, "cpu")
    assert page.failing() == [], [c.claim for c in page.failing()]

    root = copy_records(tmp_path)

    def scale_accuracy(values, factor=0.5):    # PGD and worst of both both lose half their robust images
        values["accuracy"] = [a if e == 0 else a * factor for e, a in zip(values["eps"], values["accuracy"])]
        values["envelope"] = [a if e == 0 else a * factor for e, a in zip(values["eps"], values["envelope"])]
        aa = values["autoattack"]
        aa["worst_of_both"] = [a if e == 0 else a * factor for e, a in zip(aa["eps"], aa["worst_of_both"])]

    # margin -> eps: adv at the suggested eps loses half its robustness
    for path in runs(root, "fashion_mnist", "adv0.18"):
        edit(path / "result.json", scale_accuracy)
    # rand on Fashion-MNIST: rand0.3 becomes as robust as adv0.2
    adv = {json.loads((p / "config.json").read_text())["seed"]: json.loads((p / "result.json").read_text())
           for p in runs(root, "fashion_mnist", "adv0.2")}

    def like_adv(values):
        other = adv[values["seed"]]
        for key in ("accuracy", "envelope"):
            values[key] = other[key]
        values["autoattack"]["worst_of_both"] = other["autoattack"]["worst_of_both"]

    for path in runs(root, "fashion_mnist", "rand0.3"):
        edit(path / "result.json", like_adv)
    # rand on Moons: rand0.3 becomes as robust as adv0.3, exactly
    for path in runs(root, "moons", "rand0.3", noise=0.05):
        edit(path / "analysis-exact.json", lambda a: a.update(accuracy=[*a["accuracy"][:-1], 0.83]))
    # white noise: ce flips 3 % of its correct predictions at level 0.05
    for path in runs(root, "fashion_mnist", "ce"):
        edit(path / "result.json", lambda r: r["white_noise"]["flip_rate"].__setitem__(0, 0.03))
    # the equilibrium: IMA's boundary passes exactly halfway between every colliding pair
    for path in runs(root, "moons", "ima", noise=0.1):
        edit(path / "analysis-halfway.json", lambda a: a.update(imbalance=[0.0] * len(a["imbalance"])))
    # the large test: IMA gains 0.05 at every attacked eps (L-inf)
    for path in runs(root, "fashion_mnist", "ima"):
        edit(path / "result.json", lambda r: r["large_test"].update(
            accuracy=[a if e == 0 else a + 0.05 for e, a in zip(r["large_test"]["eps"], r["large_test"]["accuracy"])]))

    failing = [c.claim for c in verdict.verdict_page(str(root), SEEDS, NOISE_LEVELS, "cpu").failing()]
    expected = [
        "Fashion-MNIST (pgd): adv0.18 within two SE of the best adv row",
        "Fashion-MNIST (worst_of_both): adv0.18 within two SE of the best adv row",
        "Fashion-MNIST: the best rand row gains under 15 %",
        "Moons: the best rand row gains between 20 and 60 %",
        "Fashion-MNIST: white noise at 0.05 flips some of ce's correct predictions",
        "Moons: IMA's boundary is not nearer halfway than adv0.3's",
        "Fashion-MNIST linf: on the large test IMA is nowhere resolved above MMA",
    ]
    for text in expected:
        assert sum(c.startswith(text) for c in failing) == 1, (text, failing)
    assert len(failing) == len(expected), failing


def test_a_missing_large_test_fails_its_claim(tmp_path):
    root = copy_records(tmp_path)
    for path in runs(root, "fashion_mnist", "mma", "l2"):
        edit(path / "result.json", lambda r: r.pop("large_test", None))
    failing = [c.claim for c in verdict.verdict_page(str(root), SEEDS, NOISE_LEVELS, "cpu").failing()]
    assert failing == ["Fashion-MNIST l2: IMA and MMA measured on the large test"]
