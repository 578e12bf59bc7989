"""Evaluations added to a finished run: weights restored and proven, the large test, the white-noise test,
and AutoAttack limited to the images another attack left robust (the cascade)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from imalib.autoattack import evaluate_autoattack
from imalib.cli import main
from imalib.config import RunConfig
from imalib.data.base import data_root
from imalib.data.fashion_mnist import FILES
from imalib.errors import CheckpointError, ConfigError
from imalib.evaluate import evaluate_robustness
from imalib.io import load_torch, save_torch
from imalib.noise import white_noise_error_rate, white_noise_rates
from imalib.profiles import table_configs
from imalib.records import LargeTestEntry, ResultRecord, WhiteNoiseEntry, read_record
from imalib.reevaluate import add_large_test, add_white_noise, load_large_test, own_positions, restore_weights
from imalib.runs import run_experiment, splits_of

RAW = data_root() / "FashionMNIST" / "raw"
needs_fashion = pytest.mark.skipif(not all((RAW / name).is_file() for name in FILES),
                                   reason=f"the Fashion-MNIST files are not in {RAW} (set $IMALIB_DATA_ROOT)")


def moons_config() -> RunConfig:
    return table_configs("moons", "linf", "smoke", methods=["ce"])[0].replace(n_test=40, eval_eps=(0.0, 0.1, 0.3))


def fashion_config() -> RunConfig:
    config = table_configs("fashion_mnist", "linf", "smoke", methods=["ce"])[0]
    return config.replace(n_train=64, n_test=10, eval_eps=(0.0, 0.1), eval_steps=3)


# ------------------------------------------------------------------------------------------- white noise
def test_white_noise_rates_level_zero_is_clean_and_draws_repeat(linear_model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 2, generator=g) * 2 - 1, torch.randint(0, 2, (200,), generator=g)
    errors, flips, clean = white_noise_rates(linear_model, x, y, levels=(0.0, 0.5, 2.0), repeats=3, clip=None, seed=4)
    clean_now = float((linear_model(x).argmax(1) != y).float().mean())
    assert errors[0] == pytest.approx(clean) == pytest.approx(clean_now) and flips[0] == 0.0
    assert 0.0 < flips[1] < flips[2]  # more noise moves more of the correct points across the line
    assert (errors, flips, clean) == white_noise_rates(linear_model, x, y, levels=(0.0, 0.5, 2.0), repeats=3,
                                                       clip=None, seed=4)  # fmt: skip
    assert errors != white_noise_rates(linear_model, x, y, levels=(0.0, 0.5, 2.0), repeats=3, clip=None, seed=5)[0]
    # level k draws what the one-level rate (the COVID-19 chapter's) draws with seed * 1_000_003 + k
    assert errors[2] == white_noise_error_rate(linear_model, x, y, level=2.0, repeats=3, clip=None,
                                               seed=4 * 1_000_003 + 2, batch_size=500)  # fmt: skip
    with pytest.raises(ValueError, match="levels"):
        white_noise_rates(linear_model, x, y, levels=(-0.1,), repeats=1, clip=None)


def test_white_noise_entry_in_a_moons_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_experiment(moons_config(), results_root=tmp_path, autoattack=False)
    before = read_record(run.path / "result.json")
    assert main(["reevaluate", "--white-noise", str(run.path)]) == 0
    assert "level 0.05: error rate" in capsys.readouterr().out
    record = read_record(run.path / "result.json")
    noise = record.white_noise
    assert isinstance(noise, WhiteNoiseEntry) and noise.levels == (0.05, 0.1, 0.2, 0.3)
    assert noise.n_images == record.n_test and noise.clean_error == pytest.approx(1 - record.accuracy[0])
    assert all(e >= noise.clean_error - 0.5 for e in noise.error_rate) and len(noise.flip_rate) == 4
    assert record.accuracy == before.accuracy and record.history == before.history  # its own numbers are kept
    assert ResultRecord.from_json(json.loads((run.path / "result.json").read_text())) == record
    # the large test needs nested test subsets: Moons draws its test set afresh per size
    with pytest.raises(ConfigError, match="are not among"):
        add_large_test(run.path, n_images=80)
    with pytest.raises(ConfigError, match="choose more than"):
        add_large_test(run.path, n_images=40)


def test_weights_that_are_not_the_records_are_refused(tmp_path: Path) -> None:
    run = run_experiment(moons_config(), results_root=tmp_path, autoattack=False)
    robust = load_torch(run.path / "robust.pt")
    robust[0] = ~robust[0]  # the record now says otherwise about every clean prediction
    save_torch(run.path / "robust.pt", robust)
    with pytest.raises(CheckpointError, match="not the record's weights"):
        add_white_noise(run.path)
    (run.path / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="reevaluate --restore-weights"):
        add_white_noise(run.path)


def test_restore_weights_proves_them_or_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_experiment(moons_config(), results_root=tmp_path / "a", autoattack=False)
    kept = (run.path / "model.pt").read_bytes()
    (run.path / "model.pt").unlink()
    assert main(["reevaluate", "--restore-weights", str(tmp_path / "scratch"), str(run.path)]) == 0
    assert "weights restored" in capsys.readouterr().out
    assert (run.path / "model.pt").exists() and (run.path / "weights.json").exists()
    note = json.loads((run.path / "weights.json").read_text())
    assert "bit for bit" in note["check"] and note["environment"]["cpu_count"] >= 1
    assert (run.path / "model.pt").read_bytes() == kept  # the same weights, byte for byte
    # a record the retraining does not reproduce keeps its directory as it was
    other = run_experiment(moons_config().replace(seed=5), results_root=tmp_path / "b", autoattack=False)
    (other.path / "model.pt").unlink()
    robust = load_torch(other.path / "robust.pt")
    robust[1, 0] = ~robust[1, 0]
    save_torch(other.path / "robust.pt", robust)
    with pytest.raises(CheckpointError, match="1 of"):
        restore_weights(other.path, scratch_root=tmp_path / "scratch")
    assert not (other.path / "model.pt").exists() and not (other.path / "weights.json").exists()


def test_bad_reevaluate_flags_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_experiment(moons_config(), results_root=tmp_path, autoattack=False)
    assert main(["reevaluate", str(run.path)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["reevaluate", "--white-noise", "--with-autoattack", str(run.path)]) == 2
    assert "--with-autoattack goes with --large-test" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the cascade
def test_autoattack_on_candidates_only_never_attacks_the_rest(linear_model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(30, 2, generator=g) * 2 - 1, torch.randint(0, 2, (30,), generator=g)
    eps = (0.0, 0.2)
    pgd = evaluate_robustness(linear_model, x, y, norm="linf", eps_list=eps, steps=10, clip=None, seed=0)
    alone = evaluate_autoattack(linear_model, x, y, norm="linf", eps_list=eps, clip=None, num_classes=2).robustness
    cascade = evaluate_autoattack(linear_model, x, y, norm="linf", eps_list=eps, clip=None, num_classes=2,
                                  candidates=pgd.robust).robustness  # fmt: skip
    assert not (cascade.robust & ~pgd.robust).any()  # an image PGD broke stays broken
    # a linear model: both attacks are exact, so the cascade equals the worst of both image by image
    assert torch.equal(cascade.robust, alone.robust & pgd.robust)
    with pytest.raises(ValueError, match="candidates has shape"):
        evaluate_autoattack(linear_model, x, y, norm="linf", eps_list=eps, clip=None, num_classes=2,
                            candidates=pgd.robust[:, :5])  # fmt: skip


# --------------------------------------------------------------------------------------- large test
@needs_fashion
def test_large_test_on_fashion_mnist_contains_the_runs_own_images(tmp_path: Path) -> None:
    run = run_experiment(fashion_config(), results_root=tmp_path, autoattack=False)
    record = add_large_test(run.path, n_images=20, autoattack=True)
    entry = record.large_test
    assert isinstance(entry, LargeTestEntry) and entry.n_images == 20 and entry.eps == record.eps
    large = load_large_test(run.path)
    worst = load_large_test(run.path, "worst_of_both")
    assert large is not None and worst is not None and large.shape == (2, 20)
    splits = splits_of(run.config.replace(n_test=20), None)
    positions = own_positions(splits.test, splits_of(run.config, None).test)
    assert len(set(positions.tolist())) == 10
    assert torch.equal(large[0, positions], load_torch(run.path / "robust.pt")[0])  # the same clean verdicts
    assert entry.accuracy == tuple(float(v) for v in large.float().mean(1))
    assert not (worst & ~large).any() and entry.worst_of_both == tuple(float(v) for v in worst.float().mean(1))
    assert entry.autoattack is not None and entry.autoattack["scope"].startswith("cascade")
    assert read_record(run.path / "result.json").accuracy == run.record.accuracy
    with pytest.raises(ConfigError, match="attack="):
        load_large_test(run.path, "fab")
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    (copy / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="restore them first"):
        add_large_test(copy, n_images=20)
