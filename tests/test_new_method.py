"""Adding a training method takes its module, one registry line and its test: a toy method, registered at runtime.

The toy method (Gaussian-noise training with a batch counter as its state) is
defined here, registered with one line (``METHODS["gauss"] = GaussNoise``),
and then trains through ``fit`` (with a resume), ``run_experiment`` and the
command line, with its parameter checked from its dataclass fields. Nothing
else in imalib learns about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from imalib.cli import main
from imalib.data.moons import load_moons
from imalib.errors import ConfigError
from imalib.methods import METHODS, build_method, method_param_spec
from imalib.methods.base import BatchContext, BatchSource, StepOutput, ce_sum
from imalib.models import moons_mlp
from imalib.profiles import table_configs
from imalib.runs import run_experiment
from imalib.train import fit, make_optimizer


@dataclass
class Counter:
    """The toy method's state: how many batches it has seen (checkpointed by fit like any state)."""

    seen: int = 0
    margins: None = None

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


@dataclass(frozen=True)
class GaussNoise:
    """(1 - weight) CE(x) + weight CE(x + eps * N(0, 1))."""

    eps: float
    weight: float = 0.5
    name: str = "gauss"

    def init(self, n_train: int, epochs: int) -> Counter:
        return Counter()

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, state: Counter,
                   ctx: BatchContext) -> StepOutput:
        state.seen += 1
        noise = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype) * self.eps
        logits = model(x)
        clean = ce_sum(logits, y) / x.shape[0]
        noisy = ce_sum(model(x + noise), y) / x.shape[0]
        return StepOutput((1 - self.weight) * clean + self.weight * noisy, logits, {"ce": clean.item()})

    def end_epoch(self, model: nn.Module, data: BatchSource, state: Counter, ctx: BatchContext) -> None:
        return None


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(METHODS, "gauss", GaussNoise)  # the one registry line
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_parameters_come_from_the_fields() -> None:
    assert method_param_spec("gauss") == {"weight": float}
    assert build_method("gauss", eps=0.1, norm="linf", params={"weight": 1}) == GaussNoise(eps=0.1, weight=1.0)
    with pytest.raises(ConfigError, match="unknown parameter 'beta' for method 'gauss'; allowed: weight"):
        build_method("gauss", eps=0.1, norm="linf", params={"beta": 0.5})
    with pytest.raises(ConfigError, match="needs eps > 0"):
        build_method("gauss", eps=0.0, norm="linf")


def test_fit_owns_and_resumes_the_method_state(tmp_path: Path) -> None:
    splits = load_moons(512, 1, 1, seed=0)
    common: dict[str, Any] = {"epochs": 3, "batch_size": 128, "seed": 0, "clip": None, "progress": False}
    torch.manual_seed(0)
    model = moons_mlp()
    straight = fit(model, GaussNoise(eps=0.1), splits.train, optimizer=make_optimizer(model, "adam", 1e-3, 0.0),
                   **common)
    assert straight.state.seen == 3 * 4
    torch.manual_seed(0)
    model_b = moons_mlp()
    fit(model_b, GaussNoise(eps=0.1), splits.train, optimizer=make_optimizer(model_b, "adam", 1e-3, 0.0),
        checkpoint=tmp_path / "c.pt", stop_after_batches=6, **common)  # stops in epoch 2
    resumed = fit(model_b, GaussNoise(eps=0.1), splits.train, optimizer=make_optimizer(model_b, "adam", 1e-3, 0.0),
                  checkpoint=tmp_path / "c.pt", **common)
    assert resumed.state.seen == straight.state.seen  # epoch 1 from the checkpoint, epochs 2-3 trained again
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model_b.state_dict().values()))


def test_run_experiment_and_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = table_configs("moons", "linf", "smoke", methods=["ima"])[0]
    config = base.replace(method="gauss", eps=0.1, method_params={"weight": 0.25}, n_train=256, epochs=2)
    run = run_experiment(config, results_root=tmp_path, progress=False)
    assert run.record.method == "gauss" and run.record.label == "gauss" and len(run.record.history) == 2
    assert run.record.margins is None and 0.0 <= run.record.accuracy[0] <= 1.0
    assert set(run.record.final.terms) == {"ce"}

    code = main(["train", "--dataset", "moons", "--profile", "smoke", "--method", "gauss", "--eps", "0.1",
                 "--param", "weight=0.5", "--n-train", "256", "--epochs", "1", "--quiet",
                 "--output", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0 and (Path(out.strip()) / "model.pt").exists()
