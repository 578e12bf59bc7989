"""AutoAttack in a run's evaluation: the profile switch, the record entry, the command line, the progress bars.

Smoke scale: a two-class Moons run (APGD-CE + FAB) and, where the real files
are staged, a ten-class Fashion-MNIST run (APGD-CE + APGD-T), each with a tiny
test set and two noise levels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from imalib.cli import main
from imalib.config import RunConfig
from imalib.data.base import data_root
from imalib.data.fashion_mnist import FILES
from imalib.evaluate import evaluate_robustness
from imalib.io import load_torch
from imalib.profiles import SCALES, autoattack_by_default, table_configs
from imalib.records import ResultRecord, read_record
from imalib.runs import add_autoattack, evaluate_run, load_autoattack, load_robustness, run_experiment, train_run

RESULTS = Path(__file__).resolve().parents[1] / "results"
RAW = data_root() / "FashionMNIST" / "raw"
needs_fashion = pytest.mark.skipif(not all((RAW / name).is_file() for name in FILES),
                                   reason=f"the Fashion-MNIST files are not in {RAW} (set $IMALIB_DATA_ROOT)")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def moons_config() -> RunConfig:
    config = table_configs("moons", "linf", "smoke", methods=["ima"])[0]
    return config.replace(n_test=60, eval_eps=(0.0, 0.1, 0.3))


def fashion_config() -> RunConfig:
    config = table_configs("fashion_mnist", "linf", "smoke", methods=["ima"])[0]
    return config.replace(n_train=64, n_test=12, eval_eps=(0.0, 0.3))


def md5(file: Path) -> str:
    return hashlib.md5(file.read_bytes()).hexdigest()


def check_entry(record: ResultRecord, path: Path, attacks: tuple[str, ...]) -> None:
    entry = record.autoattack
    assert entry is not None and entry.eps == record.eps and entry.n_images == record.n_test
    assert tuple(entry.pgd_accuracy) == tuple(record.accuracy)
    assert tuple(entry.settings["attacks"]) == attacks and entry.settings["n_restarts"] == 1
    assert entry.settings["starts"] == "per-image"
    robust = load_autoattack(path)
    pgd = load_robustness(path).robust
    assert robust is not None and robust.shape == pgd.shape and robust.dtype == torch.bool
    both = (robust & pgd).float().mean(dim=1)
    assert entry.worst_of_both == tuple(float(v) for v in both)
    assert entry.attacked is not None and entry.attacked[0] == 0  # eps 0: nothing to attack
    assert len(entry.level_seconds) == len(entry.eps) and entry.level_seconds[0] == 0.0
    assert ResultRecord.from_json(json.loads((path / "result.json").read_text())) == record
    if entry.mode == "cascade":  # AutoAttack ran on PGD's survivors only: its outcome is the worst of both
        assert entry.accuracy is None and not (robust & ~pgd).any()
        assert entry.attacked[1:] == tuple(int(v) for v in pgd[1:].sum(dim=1))
        return
    assert entry.mode == "full" and entry.accuracy == tuple(float(v) for v in robust.float().mean(dim=1))
    assert entry.attacked[1:] == (int(pgd[0].sum()),) * (len(entry.eps) - 1)  # every clean-correct image
    for k in range(len(entry.eps)):
        assert entry.worst_of_both[k] <= min(entry.accuracy[k], record.accuracy[k])
    assert entry.accuracy[0] == record.accuracy[0]  # eps 0: both are clean accuracy


def check_cascade_equals_full(path: Path) -> None:
    """AutoAttack on every image again (``full``): its worst of both must equal the cascade's, image by image."""
    cascade = read_record(path / "result.json")
    mask = load_autoattack(path)
    assert cascade.autoattack is not None and cascade.autoattack.mode == "cascade" and mask is not None
    full = add_autoattack(path, full=True)
    assert full.autoattack is not None and full.autoattack.mode == "full"
    pgd = load_robustness(path).robust
    alone = load_autoattack(path)
    assert alone is not None and torch.equal(alone & pgd, mask)
    assert full.autoattack.worst_of_both == cascade.autoattack.worst_of_both
    assert full.autoattack.attacked is not None and cascade.autoattack.attacked is not None
    assert sum(cascade.autoattack.attacked) < sum(full.autoattack.attacked)  # the cascade attacked fewer images


# ------------------------------------------------------------------------------------ the profile switch


def test_autoattack_is_a_profile_setting_not_a_config_field() -> None:
    assert autoattack_by_default("fashion_mnist", "cpu") and autoattack_by_default("fashion_mnist", "paper")
    assert autoattack_by_default("svhn", "cpu") and autoattack_by_default("covid", "paper")
    assert not autoattack_by_default("fashion_mnist", "smoke") and not autoattack_by_default("moons", "cpu")
    assert all(not scale.autoattack for (dataset, _), scale in SCALES.items() if dataset == "moons")
    assert "autoattack" not in table_configs("fashion_mnist", "linf", "cpu")[0].to_dict()
    # the committed cpu rows keep their hashes (and so their directories)
    for config in table_configs("fashion_mnist", "linf", "cpu") + table_configs("fashion_mnist", "l2", "cpu"):
        assert (RESULTS / "fashion_mnist" / f"{config.label}-{config.norm}-{config.hash()}" / "result.json").exists()


# ------------------------------------------------------------------------------------------ Moons


def test_moons_two_classes_with_autoattack(tmp_path: Path) -> None:
    config = moons_config()
    plain = run_experiment(config, results_root=tmp_path / "plain")
    assert plain.record.autoattack is None and not (plain.path / "autoattack.pt").exists()  # off for Moons
    run = run_experiment(config, results_root=tmp_path / "aa", autoattack=True)
    assert run.record.accuracy == plain.record.accuracy  # AutoAttack leaves the PGD numbers alone
    check_entry(run.record, run.path, ("apgd-ce", "fab"))
    assert "unbounded" in str(run.record.autoattack.settings["box"])  # type: ignore[union-attr]
    check_cascade_equals_full(run.path)
    check_entry(read_record(run.path / "result.json"), run.path, ("apgd-ce", "fab"))


def test_cli_adds_autoattack_and_keeps_pgd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = train_run(moons_config(), results_root=tmp_path, progress=False)
    evaluate_run(path)
    robust_before = md5(path / "robust.pt")
    before = read_record(path / "result.json")
    assert main(["evaluate", "--attack", "autoattack", "--quiet", str(path)]) == 0
    out = capsys.readouterr().out
    assert "apgd-ce+fab" in out and "worst_of_both" in out and "cascade" in out
    cascade = read_record(path / "result.json")
    assert cascade.autoattack is not None and cascade.autoattack.mode == "cascade"
    assert main(["evaluate", "--attack", "autoattack", "--aa-full", "--quiet", str(path)]) == 0
    assert "cascade" not in capsys.readouterr().out
    after = read_record(path / "result.json")
    assert md5(path / "robust.pt") == robust_before
    assert after.accuracy == before.accuracy and after.eval_seconds == before.eval_seconds
    check_entry(after, path, ("apgd-ce", "fab"))
    assert after.autoattack is not None and after.autoattack.worst_of_both == cascade.autoattack.worst_of_both
    assert main(["evaluate", "--aa-full", "--quiet", str(path)]) == 2  # goes with --attack autoattack
    assert "--aa-full go with --attack autoattack" in capsys.readouterr().err
    # the standard set needs 4+ classes: one clean line, nothing changed
    assert main(["evaluate", "--attack", "autoattack", "--aa-version", "standard", "--quiet", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4+ classes" in err[0]
    # the standard entry goes with --attack autoattack only
    assert main(["evaluate", "--n-images", "3", "--quiet", str(path)]) == 2
    assert "--attack autoattack" in capsys.readouterr().err
    assert main(["evaluate", "--attack", "autoattack", "--aa-eps", "0.3", "--quiet", str(path)]) == 2
    assert "--aa-eps goes with --aa-version standard" in capsys.readouterr().err
    assert read_record(path / "result.json") == after  # refused: nothing changed


def test_missing_weights_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_experiment(moons_config(), results_root=tmp_path)
    (run.path / "model.pt").unlink()
    assert main(["evaluate", "--attack", "autoattack", "--quiet", str(run.path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no model.pt" in lines[0] and "imalib train --dataset moons --method ima" in lines[0]
    assert not (run.path / "autoattack.pt").exists()
    with pytest.raises(FileNotFoundError, match="evaluate it first"):
        add_autoattack(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_ten_classes_with_autoattack_and_the_check_of_the_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = fashion_config()
    run = run_experiment(config, results_root=tmp_path, autoattack=True)
    check_entry(run.record, run.path, ("apgd-ce", "apgd-t"))
    assert run.record.autoattack.settings["box"] == "data box [0, 1]"  # type: ignore[union-attr]
    check_cascade_equals_full(run.path)
    run = dataclasses.replace(run, record=read_record(run.path / "result.json"))
    pgd = load_robustness(run.path).robust
    assert main(["evaluate", "--attack", "autoattack", "--aa-version", "standard", "--n-images", "3",
                 "--aa-eps", "0.2", "--quiet", str(run.path)]) == 2  # not one of the run's levels
    assert "choose among the run's levels [0.0, 0.3]" in capsys.readouterr().err
    assert main(["evaluate", "--attack", "autoattack", "--aa-version", "standard", "--n-images", "3",
                 "--aa-eps", "0.3", "--quiet", str(run.path)]) == 0
    record = read_record(run.path / "result.json")
    standard = record.autoattack_standard
    assert standard is not None and record.autoattack == run.record.autoattack  # the custom entry is kept
    assert standard.indices is not None and len(standard.indices) == 3 == standard.n_images
    assert list(standard.indices) == sorted(set(standard.indices)) and max(standard.indices) < record.n_test
    assert standard.settings["version"] == "standard"
    assert tuple(standard.settings["attacks"]) == ("apgd-ce", "apgd-t", "fab-t", "square")
    subset = load_torch(run.path / "autoattack_standard.pt")
    assert subset.shape == (1, 3) and standard.eps == (0.3,)
    assert standard.pgd_accuracy == tuple(float(v) for v in pgd[1:, list(standard.indices)].float().mean(dim=1))
    assert all(w <= min(a, p) for w, a, p in
               zip(standard.worst_of_both, standard.accuracy, standard.pgd_accuracy, strict=True))
    assert "standard" in capsys.readouterr().out
    # a fresh PGD evaluation drops the standard entry's file, measured against the old outcome
    shutil.copy(run.path / "result.json", tmp_path / "kept.json")
    evaluate_run(run.path, autoattack=False)
    assert not (run.path / "autoattack_standard.pt").exists()
    assert read_record(run.path / "result.json").autoattack is None


# ---------------------------------------------------------------------------------------- progress


def test_progress_bars_show_the_attack_and_eps_and_are_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    x = torch.randn(40, 2)
    y = model(x).argmax(dim=1).detach()
    capsys.readouterr()
    quiet = evaluate_robustness(model, x, y, norm="linf", eps_list=[0.0, 0.1, 0.2], clip=None, steps=5)
    assert capsys.readouterr().err == ""
    loud = evaluate_robustness(model, x, y, norm="linf", eps_list=[0.0, 0.1, 0.2], clip=None, steps=5,
                               progress=True)
    err = capsys.readouterr().err
    assert "PGD-ce linf" in err and "eps 0.1, 0.2" in err
    assert torch.equal(quiet.robust, loud.robust)


def test_run_experiment_is_quiet_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    run_experiment(moons_config(), results_root=tmp_path, autoattack=True)
    assert capsys.readouterr().err == ""


def test_images_pgd_called_robust_and_autoattack_broke(tmp_path: Path) -> None:
    from imalib.book.robustness import broken_by_autoattack
    from imalib.io import save_torch
    from imalib.runs import EXAMPLES_FILE, add_autoattack_examples, load_examples, load_run

    run = run_experiment(moons_config(), results_root=tmp_path, autoattack=True, full_autoattack=True)
    assert (run.path / EXAMPLES_FILE).exists()  # the evaluation writes them
    k = run.record.eps.index(0.3)
    aa = load_autoattack(run.path)
    assert aa is not None
    clean = load_robustness(run.path).robust[0]
    # pretend PGD found nothing: every clean-correct image that AutoAttack broke is then a candidate
    save_torch(run.path / "robust.pt", clean.unsqueeze(0).repeat(len(run.record.eps), 1))
    candidates = (clean & ~aa[k]).nonzero().squeeze(1)
    assert candidates.numel() >= 3
    assert add_autoattack_examples(run.path) >= 1
    examples = load_examples(run.path)
    assert examples is not None and len(examples) <= 2 * (len(run.record.eps) - 1)
    frame = broken_by_autoattack([run.path], 0.3, count=3)
    assert 1 <= len(frame) <= 2 and set(frame["index"]) <= set(candidates[:4].tolist())
    model = load_run(run.path).model
    for row in frame.itertuples():
        assert row.eps == 0.3 and row.distance <= 0.3 * (1 + 1e-4)
        assert float((row.adversarial - row.image).abs().max()) <= 0.3 * (1 + 1e-4)
        assert row.adversarial_prediction != row.y
        assert int(model(row.adversarial.unsqueeze(0)).argmax()) == row.adversarial_prediction
        assert int(model(row.image.unsqueeze(0)).argmax()) == row.y  # clean-correct
    assert len(broken_by_autoattack([run.path], count=1)) == 1
    (run.path / EXAMPLES_FILE).unlink()
    with pytest.raises(ValueError, match="no autoattack_examples.pt"):
        broken_by_autoattack([run.path], 0.3)
    (run.path / "autoattack.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no autoattack.pt"):
        add_autoattack_examples(run.path)
