"""Reliability: divergence, bit-identical resume, hard kills, determinism, safe loading, parameter types."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import pytest
import torch
from torch import Tensor, nn

from imalib.config import PROFILES, ConfigError, RunConfig
from imalib.data.moons import load_moons
from imalib.io import CheckpointError, load_torch
from imalib.checks import NOTEBOOK_SPEC, check_notebook_params, describe
from imalib.methods import CE, IMA, check_method_params
from imalib.methods.base import BatchContext, BatchSource, Method, MethodState, StepOutput
from imalib.models import moons_mlp
from imalib.profiles import table_configs
from imalib.runs import run_dir, run_experiment
from imalib.train import TrainingDiverged, fit, make_optimizer

TEMP_FILE = re.compile(r"^\.(config\.json|checkpoint\.pt|model\.pt|margins\.pt|train\.json)\..+\.tmp$")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the machine is shared, and two threads are much slower there."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def fresh(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = moons_mlp()
    return model, make_optimizer(model, "adam", 1e-3, 0.0)


# ------------------------------------------------------------------------------------------- NaN loss


@dataclass
class NaNAt:
    """Wraps a method and turns its loss into NaN at one (epoch, batch), both counted from 1."""

    inner: Method
    epoch: int
    batch: int
    checkpoint: Path
    name: str = "nan-at"
    seen_epoch: int = 0
    seen_batch: int = 0
    snapshot: bytes | None = None
    _ctx: Any = field(default=None, repr=False)

    def init(self, n_train: int, epochs: int) -> MethodState:
        return self.inner.init(n_train, epochs)

    def end_epoch(self, model: nn.Module, data: BatchSource, state: Any, ctx: BatchContext) -> None:
        self.inner.end_epoch(model, data, state, ctx)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: Any,
                   ctx: BatchContext) -> StepOutput:
        if ctx is not self._ctx:  # fit makes one context per epoch
            self._ctx, self.seen_epoch, self.seen_batch = ctx, self.seen_epoch + 1, 0
            if self.seen_epoch == self.epoch:  # the previous epoch's checkpoint as it is before the failure
                self.snapshot = self.checkpoint.read_bytes()
        self.seen_batch += 1
        out = self.inner.batch_loss(model, x, y, idx, state, ctx)
        if (self.seen_epoch, self.seen_batch) == (self.epoch, self.batch):
            return StepOutput(out.loss * float("nan"), out.logits, out.terms)
        return out


@pytest.mark.parametrize("inner", [CE(), IMA(eps=0.3, margin_mode="fused")], ids=["ce", "ima"])
def test_nan_loss_stops_and_keeps_last_checkpoint(inner: Method, tmp_path: Path) -> None:
    splits = load_moons(1000, 10, 10, seed=0)
    checkpoint = tmp_path / "checkpoint.pt"
    method = NaNAt(inner, epoch=2, batch=3, checkpoint=checkpoint)
    model, optimizer = fresh(0)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, method, splits.train, epochs=3, batch_size=128, optimizer=optimizer, seed=0, clip=None,
            checkpoint=checkpoint, progress=False)
    message = str(info.value)
    assert "epoch 2, batch 3" in message and "nan" in message and str(checkpoint) in message
    assert method.snapshot is not None and checkpoint.read_bytes() == method.snapshot  # unchanged
    state = load_torch(checkpoint)
    assert state["epoch"] == 1 and [entry["epoch"] for entry in state["history"]] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary files left
    # The kept checkpoint resumes (with the healthy method) to the end.
    model, optimizer = fresh(1)
    result = fit(model, inner, splits.train, epochs=3, batch_size=128, optimizer=optimizer, seed=0, clip=None,
                 checkpoint=checkpoint, progress=False)
    assert [entry["epoch"] for entry in result.history] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- resume


def _without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


@pytest.mark.parametrize("margin_mode", ["paper", "fused"])
def test_resume_is_bit_identical(margin_mode: Literal["paper", "fused"], tmp_path: Path) -> None:
    splits = load_moons(1000, 10, 10, seed=0)
    method = IMA(eps=0.3, margin_mode=margin_mode)
    common: dict[str, Any] = dict(epochs=3, batch_size=128, seed=0, clip=None, progress=False)
    n_batches = splits.train.n_batches(128)

    model_a, optimizer_a = fresh(0)
    straight = fit(model_a, method, splits.train, optimizer=optimizer_a, checkpoint=tmp_path / "a.pt", **common)

    model_b, optimizer_b = fresh(0)
    fit(model_b, method, splits.train, optimizer=optimizer_b, checkpoint=tmp_path / "b.pt",
        stop_after_batches=n_batches + n_batches // 2, **common)  # stops in the middle of epoch 2
    assert load_torch(tmp_path / "b.pt")["epoch"] == 1
    model_c, optimizer_c = fresh(12345)  # another initialisation: everything must come from the checkpoint
    resumed = fit(model_c, method, splits.train, optimizer=optimizer_c, checkpoint=tmp_path / "b.pt", **common)

    state_a, state_c = model_a.state_dict(), model_c.state_dict()
    assert state_a.keys() == state_c.keys()
    assert all(torch.equal(state_a[key], state_c[key]) for key in state_a)
    assert straight.margins is not None and resumed.margins is not None
    assert torch.equal(straight.margins.values, resumed.margins.values)
    for group_a, group_c in zip(optimizer_a.state.values(), optimizer_c.state.values()):
        assert all(torch.equal(group_a[k], group_c[k]) for k in group_a)
    assert _without_seconds(straight.history) == _without_seconds(resumed.history)
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3]


# ----------------------------------------------------------------------------------- kill and resume


# A moons run of three epochs of about 190 small batches each (the child process blocks in epoch 2).
KILL_OVERRIDES: dict[str, Any] = {"n_train": 3000, "batch_size": 16, "epochs": 3}


def kill_config() -> RunConfig:
    return table_configs("moons", "linf", "smoke", methods=["ce"], **KILL_OVERRIDES)[0]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_leaves_complete_files_and_resumes(signum: int, tmp_path: Path) -> None:
    config = kill_config()
    root = tmp_path / "results"
    path = run_dir(config, root)
    waiting = tmp_path / "waiting"
    # The child blocks in the first batch of epoch 2 (after the epoch-1 checkpoint) and says so with a marker
    # file, so the signal always lands mid-run, however fast or loaded the machine is.
    # The child also installs Python's own Ctrl-C handler: a process started from a background job inherits
    # SIGINT as ignored, and Python then leaves it ignored.
    code = textwrap.dedent(f"""
        import pathlib, signal, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import torch
        torch.set_num_threads(1)
        from imalib.methods.ce import CE
        from imalib.profiles import table_configs
        from imalib.runs import run_experiment
        original = CE.batch_loss
        def batch_loss(self, *args, **kwargs):
            if pathlib.Path({str(path / "checkpoint.pt")!r}).exists():
                pathlib.Path({str(waiting)!r}).touch()
                time.sleep(300)
            return original(self, *args, **kwargs)
        CE.batch_loss = batch_loss
        config = table_configs("moons", "linf", "smoke", methods=["ce"], **{KILL_OVERRIDES!r})[0]
        run_experiment(config, results_root={str(root)!r}, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not waiting.exists():
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached epoch 2"
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    if signum == signal.SIGINT:
        assert b"KeyboardInterrupt" in process.stderr.read()  # type: ignore[union-attr]

    names = sorted(p.name for p in path.iterdir())
    complete = [name for name in names if not TEMP_FILE.match(name)]
    assert complete == ["checkpoint.pt", "config.json"], names
    if signum == signal.SIGINT:
        assert complete == names, "an interrupted write must remove its temporary file"
    assert RunConfig.from_dict(json.loads((path / "config.json").read_text())) == config
    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert 1 <= state["epoch"] < config.epochs
    assert [entry["epoch"] for entry in state["history"]] == list(range(1, state["epoch"] + 1))

    run = run_experiment(config, results_root=root, progress=False)
    assert (path / "result.json").is_file() and not (path / "checkpoint.pt").exists()
    assert [entry.epoch for entry in run.record.history] == [1, 2, 3]
    assert {p.name for p in path.iterdir() if not TEMP_FILE.match(p.name)} == {
        "config.json", "model.pt", "train.json", "robust.pt", "result.json"}


def test_write_interrupted_midway_keeps_the_old_file_and_leaves_no_temporary(monkeypatch, tmp_path: Path) -> None:
    """A KeyboardInterrupt in the middle of a checkpoint write: the previous checkpoint survives intact."""
    from imalib import io

    target = tmp_path / "checkpoint.pt"
    io.save_torch(target, {"epoch": 1})

    def half_then_interrupt(obj: Any, stream: Any) -> None:
        stream.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(io.torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        io.save_torch(target, {"epoch": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_torch(target) == {"epoch": 1}


# ------------------------------------------------------------------------------------------ determinism


VOLATILE = {"train_seconds", "eval_seconds", "environment"}


def _stable(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k not in VOLATILE}
    out["history"] = _without_seconds(result["history"])
    return out


def test_same_seed_same_result(tmp_path: Path) -> None:
    config = table_configs("moons", "linf", "smoke", methods=["ima"], seed=3)[0]
    first = run_experiment(config, results_root=tmp_path / "one", progress=False)
    second = run_experiment(config, results_root=tmp_path / "two", progress=False)
    assert first.path != second.path
    assert _stable(first.record.to_json()) == _stable(second.record.to_json())
    for name in ("model.pt", "margins.pt", "robust.pt"):
        a, b = load_torch(first.path / name), load_torch(second.path / name)
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------- safe loading

UNPICKLED: list[str] = []


def _side_effect(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """An object whose unpickling runs code: exactly what a weights-only loader must refuse."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_side_effect, ("ran",))


@pytest.mark.parametrize("wrap", ["bare", "inside-state-dict"])
def test_load_torch_refuses_pickled_objects(wrap: str, tmp_path: Path) -> None:
    file = tmp_path / "checkpoint.pt"
    obj: Any = Payload() if wrap == "bare" else {"model": {"w": torch.zeros(2)}, "extra": Payload()}
    torch.save(obj, file)
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load_torch(file)
    assert UNPICKLED == []
    # The file is live: the unsafe loader would have run the payload.
    torch.load(file, weights_only=False)
    assert UNPICKLED == ["ran"]


# --------------------------------------------------------------------------------------- parameter types


# The parameters every notebook shares (NOTEBOOK_SPEC may list more).
SPEC: dict[str, Any] = {"profile": PROFILES, "seed": int, "methods": (list[str], None), "device": str}


def test_notebook_params_accepts_good_values() -> None:
    params = {"profile": "smoke", "seed": 1, "methods": ["ima", "ce"], "device": "cpu"}
    assert check_notebook_params(params, SPEC) == params
    assert check_notebook_params(params) == params  # the default spec covers the shared parameters
    assert all(NOTEBOOK_SPEC[name] == spec for name, spec in SPEC.items())
    assert check_notebook_params({"methods": None}, SPEC) == {"methods": None}
    assert check_notebook_params({}, NOTEBOOK_SPEC) == {}
    spec = {"lr": float, "eps": tuple[float, ...], "steps": Optional[int], "mode": Literal["paper", "fused"],
            "extra": dict[str, int]}
    checked = check_notebook_params({"lr": 1, "eps": (0.1, 1), "steps": None, "mode": "fused", "extra": {"a": 1}},
                                    spec)
    assert checked["lr"] == 1.0 and isinstance(checked["lr"], float)


@pytest.mark.parametrize(("params", "fragments"), [
    ({"seed": "1"}, ["seed='1'", "type str", "expected int"]),
    ({"seed": True}, ["seed=True", "type bool", "expected int"]),
    ({"seed": 1.5}, ["seed=1.5", "type float", "expected int"]),
    ({"profile": "huge"}, ["profile='huge'", "type str", "one of 'smoke', 'cpu', 'paper'"]),
    ({"profile": 1}, ["profile=1", "type int"]),
    ({"methods": "ima"}, ["methods='ima'", "type str", "list[str] or None"]),
    ({"methods": ["ima", 3]}, ["methods=['ima', 3]", "type list", "list[str] or None"]),
    ({"device": None}, ["device=None", "type NoneType", "expected str"]),
    ({"sede": 1}, ["'sede'", "allowed: profile, seed, methods, device"]),
])
def test_notebook_params_wrong_type(params: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        check_notebook_params(params, SPEC)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_describe_specs() -> None:
    assert describe(int) == "int" and describe((list[str], None)) == "list[str] or None"
    assert describe(("a", "b")) == "one of 'a', 'b'" and describe(Optional[float]) == "float or None"
    assert describe(tuple[float, ...]) == "tuple[float, ...]"


def test_method_params_checked_by_field_types() -> None:
    assert check_method_params("ima", {"beta": 1, "margin_mode": "fused", "delta": None}) == {
        "beta": 1.0, "margin_mode": "fused", "delta": None}
    assert check_method_params("mma", {"mineps": 0.01, "steps": 10}) == {"mineps": 0.01, "steps": 10}
    with pytest.raises(ConfigError, match=r"steps=2.5 has type float; expected int"):
        check_method_params("ima", {"steps": 2.5})
    with pytest.raises(ConfigError, match=r"margin_mode='fast'.*one of 'paper', 'fused'"):
        check_method_params("ima", {"margin_mode": "fast"})
    with pytest.raises(ConfigError, match=r"unknown parameter 'beta' for method 'ce'; allowed: none"):
        check_method_params("ce", {"beta": 0.5})
    with pytest.raises(ConfigError, match=r"'norm' is not a method parameter"):
        check_method_params("adv", {"norm": "l2"})
    with pytest.raises(ConfigError, match=r"method='pgd' is not supported"):
        check_method_params("pgd", {})


# ------------------------------------------------------------------------------------ checkpoint formats


def test_first_format_checkpoint_resumes_and_unknown_format_is_refused(tmp_path: Path) -> None:
    """A checkpoint written before methods owned their state ("margins" in place of "method_state") resumes
    bit-identically; a checkpoint of an unknown format gets one line that says to restart the run."""
    splits = load_moons(1000, 10, 10, seed=0)
    method = IMA(eps=0.3, margin_mode="fused")
    common: dict[str, Any] = dict(epochs=2, batch_size=128, seed=0, clip=None, progress=False)
    model_a, optimizer_a = fresh(0)
    straight = fit(model_a, method, splits.train, optimizer=optimizer_a, **common)

    model_b, optimizer_b = fresh(0)
    fit(model_b, method, splits.train, optimizer=optimizer_b, checkpoint=tmp_path / "new.pt",
        stop_after_batches=splits.train.n_batches(128) + 1, **common)
    state = load_torch(tmp_path / "new.pt")
    assert state["format"] == 2 and set(state) == {"format", "model", "optimizer", "method_state", "epoch", "history"}
    old = {"model": state["model"], "optimizer": state["optimizer"], "margins": state["method_state"]["margins"],
           "epoch": state["epoch"], "history": state["history"]}
    torch.save(old, tmp_path / "old.pt")
    model_c, optimizer_c = fresh(7)
    resumed = fit(model_c, method, splits.train, optimizer=optimizer_c, checkpoint=tmp_path / "old.pt", **common)
    assert all(torch.equal(a, c) for a, c in zip(model_a.state_dict().values(), model_c.state_dict().values()))
    assert straight.margins is not None and resumed.margins is not None
    assert torch.equal(straight.margins.values, resumed.margins.values)

    torch.save({**state, "format": 99}, tmp_path / "future.pt")
    model_d, optimizer_d = fresh(0)
    with pytest.raises(CheckpointError) as info:
        fit(model_d, method, splits.train, optimizer=optimizer_d, checkpoint=tmp_path / "future.pt", **common)
    assert "format 99" in str(info.value) and "start that run again" in str(info.value)
    assert "\n" not in str(info.value)
    torch.save({**state, "method_state": {}}, tmp_path / "other.pt")  # e.g. a ce checkpoint given to IMA
    with pytest.raises(CheckpointError, match="from another run.*start that run again"):
        fit(model_d, method, splits.train, optimizer=optimizer_d, checkpoint=tmp_path / "other.pt", **common)
