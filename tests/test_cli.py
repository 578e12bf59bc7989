"""The command line: help texts, an end-to-end smoke run, and one clean error line per bad input.

Every bad-input case checks three things: exit status 2, a single line
``error: ...`` on stderr that names the offending value and what is allowed,
and that the output folder holds nothing new afterwards (no partial runs).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn

from imalib.cli import main, parse_params, parse_value
from imalib.config import ConfigError

SMOKE = ["--dataset", "moons", "--profile", "smoke", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the machine is shared, and two threads are much slower there."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Call ``main`` in-process; return (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(root: Path) -> dict[str, str]:
    """Every file below ``root`` (relative path -> md5 of its bytes); empty if ``root`` is missing."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_error_line(code: int, err: str, *fragments: str) -> str:
    """Exit status 2 and exactly one non-empty stderr line, 'error: ...', containing every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# ----------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["report"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: imalib" + (f" {command[0]}" if command else ""))
    if command == ["train"]:
        for flag in ("--dataset", "--method", "--norm", "--eps", "--profile", "--seed", "--epochs", "--batch-size",
                     "--n-train", "--n-test", "--param", "--output", "--data-root", "--device", "--quiet"):
            assert flag in out
        assert "moons,fashion_mnist,svhn,covid" in out and "ima,mma,trades,adv,rand,ddn,ce" in out


def test_python_dash_m(tmp_path: Path) -> None:
    """``python -m imalib`` reaches the same main(); a bad value exits 2 with one line and no traceback."""
    done = subprocess.run([sys.executable, "-m", "imalib", "train", "--dataset", "foo", "--method", "ima",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: dataset='foo' is not supported: use one of moons, fashion_mnist, svhn, "
                                   "covid")
    assert files_under(tmp_path / "out") == {}


def test_parse_params() -> None:
    assert parse_value("0.5") == 0.5 and parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("true") is True and parse_value("False") is False and parse_value("none") is None
    assert parse_value("fused") == "fused"
    assert parse_params(["beta=0.5", "margin_mode=fused", "beta=0.25"]) == {"beta": 0.25, "margin_mode": "fused"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_params(["beta"])


# ----------------------------------------------------------------------------------------- end to end


def test_train_evaluate_report_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_root = tmp_path / "results"
    paths = {}
    for method in ("ima", "ce"):
        code, out, err = run_cli(capsys, "train", *SMOKE, "--method", method, "--output", str(out_root))
        assert code == 0, err
        path = Path(out.strip())
        assert path.parent == out_root / "moons" and path.name.startswith(f"{method}-linf-")
        assert {"config.json", "model.pt", "train.json"} <= set(os.listdir(path))
        assert "checkpoint.pt" not in os.listdir(path)
        paths[method] = path

    # Evaluate one run by its directory and the other by the selection flags.
    code, out, err = run_cli(capsys, "evaluate", str(paths["ima"]))
    assert code == 0, err
    assert "ima on moons/linf (profile smoke" in out
    header = out.splitlines()[1].split()
    assert header == ["eps", "accuracy", "envelope", "rises"]
    assert len(out.splitlines()) == 2 + 7  # caption, header, the seven eps of the Moons table
    code, out, err = run_cli(capsys, "evaluate", *SMOKE[:-1], "--method", "ce", "--output", str(out_root))
    assert code == 0, err
    assert "ce on moons/linf" in out
    for path in paths.values():
        assert (path / "result.json").is_file() and (path / "robust.pt").is_file()

    code, out, err = run_cli(capsys, "report", "--output", str(out_root))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("moons / linf: robust accuracy (%)")
    assert "profile smoke" in lines[0] and "n_test 200" in lines[0]
    assert lines[1].split() == ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3"]
    rows = [line.split()[0] for line in lines[3:]]
    assert rows == ["ima", "ce"]  # the paper's row order
    # The clean accuracy column is a percentage.
    assert 50.0 < float(lines[3].split()[1].rstrip("*")) <= 100.0

    # Filters, and training an existing run again is a no-op that prints the same directory.
    code, out, err = run_cli(capsys, "report", "--output", str(out_root), "--dataset", "moons", "--norm", "linf")
    assert code == 0 and "ima" in out
    before = files_under(out_root)
    code, out, err = run_cli(capsys, "train", *SMOKE, "--method", "ce", "--output", str(out_root))
    assert code == 0 and Path(out.strip()) == paths["ce"]
    assert files_under(out_root) == before


# ---------------------------------------------------------------------------------- bad inputs: values


BAD_VALUES = [
    pytest.param(["--dataset", "mnist", "--method", "ima"], ["dataset='mnist'", "moons, fashion_mnist, svhn, covid"],
                 id="unknown-dataset"),
    pytest.param(["--dataset", "moons", "--method", "pgd"], ["method='pgd'", "ima, mma, trades, adv, rand, ddn, ce"],
                 id="unknown-method"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--norm", "l1"], ["norm='l1'", "linf, l2"],
                 id="unknown-norm"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--profile", "huge"],
                 ["profile='huge'", "smoke, cpu, paper"], id="unknown-profile"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--norm", "l2"],
                 ["dataset='moons' with norm='l2'", "moons/linf"], id="no-table-for-pair"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--eps", "0"], ["eps=0.0", "needs eps > 0"],
                 id="eps-zero"),
    pytest.param(["--dataset", "moons", "--method", "adv", "--eps", "-0.1"], ["eps=-0.1", "outside [0, 1.0]"],
                 id="eps-negative"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--eps", "3"], ["eps=3.0", "outside [0, 1.0]", "'linf'"],
                 id="eps-above-linf-range"),
    pytest.param(["--dataset", "fashion_mnist", "--norm", "l2", "--method", "ima", "--eps", "500"],
                 ["eps=500.0", "outside [0, 100.0]", "'l2'"], id="eps-above-l2-range"),
    pytest.param(["--dataset", "moons", "--method", "ce", "--eps", "0.3"], ["eps=0.3", "'ce'", "must be 0"],
                 id="eps-for-ce"),
    pytest.param(["--dataset", "fashion_mnist", "--method", "adv"], ["'adv'", "0.1, 0.2, 0.3", "--eps"],
                 id="eps-ambiguous"),
    pytest.param(["--dataset", "moons", "--method", "rand"], ["'rand'", "no row", "--eps"], id="eps-no-default"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--epochs", "0"], ["epochs=0", "positive integer"],
                 id="epochs-zero"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--epochs", "-3"], ["epochs=-3", "positive integer"],
                 id="epochs-negative"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--batch-size", "0"], ["batch_size=0", "positive integer"],
                 id="batch-size-zero"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--n-train", "0"], ["n_train=0", "positive integer"],
                 id="n-train-zero"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--seed", "-1"], ["seed=-1", "non-negative"],
                 id="seed-negative"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "gamma=0.1"],
                 ["'gamma'", "'ima'", "alpha, beta, delta, margin_mode, n_binary, steps"], id="param-unknown-key"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "beta=abc"],
                 ["beta='abc'", "type str", "expected float"], id="param-wrong-type"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "margin_mode=fast"],
                 ["margin_mode='fast'", "'paper', 'fused'"], id="param-bad-choice"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "beta=2"], ["beta=2.0", "[0, 1]"],
                 id="param-out-of-range"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "eps=0.1"], ["'eps'", "--eps"],
                 id="param-sets-eps"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--param", "beta"], ["'beta'", "KEY=VALUE"],
                 id="param-malformed"),
    pytest.param(["--dataset", "fashion_mnist", "--method", "ddn", "--eps", "0.3"], ["'ddn'", "norm='l2'"],
                 id="ddn-with-linf"),
    pytest.param(["--dataset", "moons", "--method", "ima", "--device", "tpu9"], ["device='tpu9'", "cpu"],
                 id="device-unknown"),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_VALUES)
def test_train_bad_value(args: list[str], fragments: list[str], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out_root = tmp_path / "out"
    code, _, err = run_cli(capsys, "train", *args, "--quiet", "--output", str(out_root))
    assert_one_error_line(code, err, *fragments)
    assert files_under(out_root) == {}


@pytest.mark.parametrize(("args", "fragments"), [BAD_VALUES[0], BAD_VALUES[5]])
def test_evaluate_bad_value(args: list[str], fragments: list[str], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate validates the same selection flags the same way."""
    code, _, err = run_cli(capsys, "evaluate", *args, "--output", str(tmp_path / "out"))
    assert_one_error_line(code, err, *fragments)
    assert files_under(tmp_path / "out") == {}


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["train", "--method", "ima"], ["train", "--dataset", "moons", "--method", "ima", "--epochs", "x"],
                 ["bogus"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bad inputs: data


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--dataset", "fashion_mnist", "--method", "ima", "--profile", "smoke",
                           "--quiet", "--data-root", str(empty), "--output", str(tmp_path / "out"))
    assert_one_error_line(code, err, "missing", "train-images-idx3-ubyte.gz", str(empty / "FashionMNIST" / "raw"),
                          "IMALIB_DATA_ROOT")
    assert files_under(tmp_path / "out") == {} and files_under(empty) == {}


def test_wrong_checksum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes(b"not the official file " + name.encode())
    data_before = files_under(tmp_path / "data")
    code, _, err = run_cli(capsys, "train", "--dataset", "fashion_mnist", "--method", "ima", "--profile", "smoke",
                           "--quiet", "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "out"))
    assert_one_error_line(code, err, "wrong md5", "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d")
    assert files_under(tmp_path / "out") == {}
    assert files_under(tmp_path / "data") == data_before  # nothing deleted or rewritten


# ----------------------------------------------------------------------------- bad inputs: checkpoints


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root holding one trained (not evaluated) moons smoke 'ce' run."""
    root = tmp_path_factory.mktemp("trained") / "results"
    assert main(["train", *SMOKE, "--method", "ce", "--output", str(root)]) == 0
    return root


@pytest.fixture
def run_copy(trained_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the trained results root and the path of its one run directory."""
    root = tmp_path / "results"
    shutil.copytree(trained_root, root)
    (path,) = (root / "moons").iterdir()
    return root, path


def other_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4))


@pytest.mark.parametrize("kind", ["other-model", "random-bytes", "pickled-object"])
def test_evaluate_refuses_bad_model_file(kind: str, run_copy: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root, path = run_copy
    if kind == "other-model":
        torch.save(other_model().state_dict(), path / "model.pt")
        expected = ["model.pt", "weights of another model"]
    elif kind == "random-bytes":
        (path / "model.pt").write_bytes(os.urandom(4096))
        expected = ["model.pt", "corrupted"]
    else:
        torch.save({"weights": Path("/etc/passwd")}, path / "model.pt")  # a pickled non-tensor object
        expected = ["model.pt", "not a weights-only checkpoint"]
    before = files_under(root)
    code, _, err = run_cli(capsys, "evaluate", str(path))
    assert_one_error_line(code, err, *expected)
    assert files_under(root) == before  # no result.json, no robust.pt


@pytest.mark.parametrize("kind", ["other-model", "random-bytes", "bare-state-dict"])
def test_train_refuses_bad_checkpoint(kind: str, run_copy: tuple[Path, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An interrupted run whose checkpoint.pt is unusable: the resume fails cleanly and touches nothing."""
    root, path = run_copy
    (path / "train.json").unlink()
    (path / "model.pt").unlink()
    model = other_model()
    if kind == "other-model":
        optimizer = torch.optim.Adam(model.parameters())
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "margins": None, "epoch": 1,
                    "history": [{"epoch": 1}]}, path / "checkpoint.pt")
        expected = ["checkpoint.pt", "weights of another model"]
    elif kind == "random-bytes":
        (path / "checkpoint.pt").write_bytes(os.urandom(4096))
        expected = ["checkpoint.pt", "corrupted"]
    else:
        torch.save(model.state_dict(), path / "checkpoint.pt")
        expected = ["checkpoint.pt", "not a training checkpoint"]
    before = files_under(root)
    code, _, err = run_cli(capsys, "train", *SMOKE, "--method", "ce", "--output", str(root))
    assert_one_error_line(code, err, *expected)
    assert files_under(root) == before  # the checkpoint is kept as it was; no model.pt, no train.json


def test_evaluate_untrained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "evaluate", *SMOKE[:-1], "--method", "ima", "--output", str(tmp_path / "out"))
    assert_one_error_line(code, err, "does not exist", "imalib train")
    assert files_under(tmp_path / "out") == {}
    (tmp_path / "half").mkdir()
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "half"))
    assert_one_error_line(code, err, "no train.json")
    assert files_under(tmp_path / "half") == {}


# --------------------------------------------------------------------------------- bad inputs: output


def test_output_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path below a regular file cannot be created, even by root."""
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    code, _, err = run_cli(capsys, "train", *SMOKE, "--method", "ce", "--output", str(afile / "sub"))
    assert_one_error_line(code, err, str(afile), "not a directory", "--output")
    assert afile.read_text() == "keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_output_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("permission bits do not stop this process from writing (running as root); "
                        "test_output_under_a_regular_file covers unwritable outputs")
        code, _, err = run_cli(capsys, "train", *SMOKE, "--method", "ce", "--output", str(locked / "results"))
        assert_one_error_line(code, err, str(locked), "not writable")
        assert files_under(locked) == {}
    finally:
        locked.chmod(0o700)


# ----------------------------------------------------------------------------------- bad inputs: report


def test_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "report", "--output", str(tmp_path / "nowhere"))
    assert_one_error_line(code, err, str(tmp_path / "nowhere"), "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "report", "--output", str(tmp_path / "empty"))
    assert_one_error_line(code, err, "no result.json")
    code, _, err = run_cli(capsys, "report", "--output", str(tmp_path / "empty"), "--dataset", "cifar")
    assert_one_error_line(code, err, "dataset='cifar'", "moons, fashion_mnist, svhn, covid")
    broken = tmp_path / "broken" / "moons" / "ce-linf-0"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text("{not json")
    code, _, err = run_cli(capsys, "report", "--output", str(tmp_path / "broken"))
    assert_one_error_line(code, err, str(broken / "result.json"), "not valid JSON")
