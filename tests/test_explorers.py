"""The book's explorers, driven like a reader would: set a control's value, check what the figure and the
listed numbers show (against the committed records under results/, which are only read)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from imalib.book import explorers as ex

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def _record(path: Path, name: str) -> dict:
    return json.loads((path / name).read_text())


def _at(record: dict, eps: float) -> float:
    return dict(zip(record["eps"], record["accuracy"]))[eps]


@pytest.fixture(scope="module")
def moons() -> ex.MoonsExplorer:
    return ex.MoonsExplorer(RESULTS, method="ima", seed=0, noise=0.1, eps=0.3)


def test_moons_runs_cover_the_grid_without_the_ablations():
    runs = ex.moons_runs(RESULTS)
    grid = {"ima", "mma", "trades", "adv0.3", "ce"}
    rand = {"rand0.1", "rand0.2", "rand0.3"}  # the rand-eps rows of the verdict, at noise 0.05 only
    assert {k.label for k in runs} == grid | rand
    assert {k.noise for k in runs if k.label in rand} == {0.05}
    assert {0.05, 0.1, 0.2} <= {k.noise for k in runs if k.label in grid} and {k.seed for k in runs} == {0, 1, 2}
    for path in runs.values():
        assert _record(path, "config.json")["method_params"] == {}, path


def test_moons_accuracies_are_the_records_numbers(moons):
    for eps in (0.3, 0.2, 0.1):
        moons.eps.value = eps
        path = moons.shown["run"]
        assert moons.shown["accuracy"]["PGD"] == _at(_record(path, "result.json"), eps)
        assert moons.shown["accuracy"]["exact"] == _at(_record(path, "analysis-exact.json"), eps)
        assert moons.shown["accuracy"]["PGD×20"] == _at(_record(path, "analysis-pgd-restarts10.json"), eps)
        assert f"{_at(_record(path, 'analysis-exact.json'), eps):.4f}" in moons.text.value


def test_moons_squares_are_the_points_pgd_misses_and_witnesses_lie_inside(moons):
    moons.method.value, moons.seed.value, moons.noise.value = "ima", 0, 0.1
    counts = {}
    for eps in (0.3, 0.25, 0.0):
        moons.eps.value = eps
        path, missed = moons.shown["run"], moons.shown["missed"]
        robust = torch.load(path / "robust.pt", weights_only=True)
        offsets = np.array([np.inf if v is None else v for v in _record(path, "analysis-exact.json")["witness_offset"]])
        k = list(_record(path, "config.json")["eval_eps"]).index(eps)
        expected = [i for i in range(robust.shape[1]) if eps > 0 and robust[k, i] and offsets[i] <= eps + 1e-9]
        assert missed == expected
        squares = moons.squares.get_paths()
        assert len(squares) == len(missed)
        x = moons._data().splits.test.inputs().numpy()
        for path_, i in zip(squares, missed):
            corners = path_.vertices[:4]
            assert np.allclose(corners.min(0), x[i] - eps) and np.allclose(corners.max(0), x[i] + eps)
        marks = moons.witness_marks.get_offsets()
        assert len(marks) == len(moons.shown["witnessed"])
        model = moons._data().run.model
        for point, i in zip(np.asarray(marks), moons.shown["witnessed"]):
            assert np.abs(point - x[i]).max() <= eps + 1e-6          # inside the square
            with torch.no_grad():                                      # and really misclassified
                assert int(model(torch.tensor(point, dtype=torch.float32)[None]).argmax()) != int(
                    moons._data().splits.test.y[i])
        counts[eps] = len(missed)
    assert counts[0.3] > counts[0.25] > 0 and counts[0.0] == 0
    assert len(moons.shown["witnessed"]) == 0


def test_moons_run_change_redraws_the_boundary_and_points(moons):
    moons.method.value, moons.seed.value, moons.noise.value, moons.eps.value = "ima", 0, 0.1, 0.3
    before_points = moons.points.get_offsets().copy()
    before_boundary = [p.vertices.copy() for p in moons._background[1].get_paths()]
    moons.noise.value = 0.2
    assert moons.shown["run"] == ex.moons_runs(RESULTS)[ex.MoonsKey("ima", 0.2, 0)]
    after_points = moons.points.get_offsets()
    assert after_points.shape == before_points.shape and not np.allclose(after_points, before_points)
    moons.noise.value = 0.1
    moons.method.value = "ce"
    after_boundary = [p.vertices for p in moons._background[1].get_paths()]
    assert sum(len(v) for v in after_boundary) > 0
    assert not (len(after_boundary) == len(before_boundary) and all(
        a.shape == b.shape and np.allclose(a, b) for a, b in zip(after_boundary, before_boundary)))
    assert moons.shown["accuracy"]["PGD"] == _at(_record(moons.shown["run"], "result.json"), 0.3)
    assert "ce, noise 0.1, seed 0" in moons.ax.get_title()
    assert moons.image.value[:4] == b"\x89PNG"


def test_moons_without_restarts_says_so(moons):
    runs = ex.moons_runs(RESULTS)
    key = next(k for k, p in runs.items() if not (p / ex.RESTARTS_FILE).exists())
    moons.method.value, moons.seed.value, moons.noise.value = key.label, key.seed, key.noise
    assert moons.shown["accuracy"]["PGD×20"] is None
    assert "not computed for this run" in moons.text.value


def test_moons_frames_are_linked_in_the_browser(moons):
    view = moons.frames(seed=0, noise=0.1, methods=["ima", "ce"])
    note, (method, eps), stack = view.children[0], view.children[1].children, view.children[2]
    assert "without a kernel" in note.value
    assert len(stack.children) == 2 and all(len(row.children) == len(eps.options) for row in stack.children)
    frames = [frame.children[0].value for row in stack.children for frame in row.children]
    assert all(f[:2] == b"\xff\xd8" for f in frames) and len(set(frames)) == len(frames)
    links = [w for w in list(ex.widgets.widget._instances.values()) if isinstance(w, Link)]
    assert any(link.source == (method, "index") and link.target == (stack, "selected_index") for link in links)
    for row in stack.children:
        assert any(link.source == (eps, "index") and link.target == (row, "selected_index") for link in links)
    accuracy = _at(_record(ex.moons_runs(RESULTS)[ex.MoonsKey("ce", 0.1, 0)], "analysis-exact.json"), 0.3)
    assert f"{accuracy:.4f}" in stack.children[1].children[-1].children[1].value


def test_margin_explorer_shows_the_calibration_records():
    margins = ex.MarginExplorer(RESULTS)
    for method in ("ima", "mma"):
        for seed in (0, 1, 2):
            margins.method.value, margins.seed.value = method, seed
            path = margins.shown["run"]
            calibration = _record(path, "analysis-calibration.json")
            stored, exact = np.array(calibration["stored"]), np.array(calibration["exact"])
            drawn = np.vstack([margins.under.get_offsets(), margins.capped.get_offsets()])
            assert len(drawn) == len(stored)
            assert np.allclose(np.sort(drawn[:, 1]), np.sort(stored)) and np.allclose(np.sort(drawn[:, 0]), np.sort(exact))
            cap = 0.3 if method == "ima" else 1.05 * 0.3
            assert margins.shown["cap"] == pytest.approx(cap)
            under = margins.under.get_offsets()
            assert len(under) == margins.shown["n_under"] == int((stored < cap * (1 - 1e-4)).sum())
            assert (np.asarray(under)[:, 1] < cap).all() and (np.asarray(margins.capped.get_offsets())[:, 1] >= cap * 0.999).all()
            assert f"{method}, noise 0.1, seed {seed}" in margins.ax.get_title()
    frames = margins.frames()
    assert len(frames.children[2].children) == 2


def test_margin_histograms_are_the_stored_margins():
    hist = ex.MarginHistogramExplorer(RESULTS)
    seen = set()
    for method in ("ima", "mma"):
        for norm in ("linf", "l2"):
            hist.method.value, hist.norm.value = method, norm
            path = hist.shown["run"]
            assert _record(path, "config.json")["method"] == method and _record(path, "config.json")["norm"] == norm
            values = torch.load(path / "margins.pt", weights_only=True).numpy().astype(np.float64)
            heights = np.array([bar.get_height() for bar in hist.ax.patches])
            expected, _ = np.histogram(values, bins=30, range=(0, max(_record(path, "config.json")["eps"], values.max())))
            assert np.array_equal(heights, expected) and heights.sum() == len(values)
            assert f"mean {values.mean():.3f}" in hist.ax.get_title()
            assert _record(path, "config.json")["seed"] == 0 and "seed 0" in hist.ax.get_title()
            seen.add(path)
    assert len(seen) == 4


def test_missing_weights_say_which_runs_and_how_to_train_them(tmp_path):
    from imalib.cli import build_parser, config_from_args

    explorer = ex.ImageExplorer(RESULTS, weights_root=tmp_path / "weights")
    every = sorted(p.parent for p in (RESULTS / "fashion_mnist").glob("*/result.json"))
    assert every and not any((p / "model.pt").exists() for p in every)
    # one model per table row: its seed-0 run (the rows with more seeds are not listed again)
    committed = [p for p in every if _record(p, "config.json")["seed"] == 0]
    rows = {(c["method"], c["eps"], c["norm"]) for c in (_record(p, "config.json") for p in every)}
    assert len(committed) == len(rows) >= 15 and len(every) > len(committed)
    assert not explorer.runs and [r.path for r in explorer.missing] == committed
    text = explorer.widget.value
    for run in explorer.missing:
        assert str(run.path) in text
    commands = [line.strip() for line in explorer.message.splitlines() if line.strip().startswith("python -m imalib")]
    assert len(commands) == len(committed)
    for run, command in zip(explorer.missing, commands):
        args = build_parser().parse_args(shlex.split(command)[3:])
        config = config_from_args(args)
        assert config.hash() == run.config.hash(), command       # trains exactly the recorded configuration
        assert Path(args.output) / "fashion_mnist" / run.path.name == tmp_path / "weights" / "fashion_mnist" / run.path.name


DATA = Path(os.environ.get("IMALIB_DATA_ROOT", "/work/shared/data"))


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    """Two tiny Fashion-MNIST runs (ce and adv, 64 training images, one epoch) trained into a temporary root."""
    if not (DATA / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no Fashion-MNIST files under {DATA} (set IMALIB_DATA_ROOT)")
    from imalib.config import RunConfig
    from imalib.runs import evaluate_run, train_run

    root = tmp_path_factory.mktemp("tiny-results")
    torch.set_num_threads(1)
    for method, eps in (("ce", 0.0), ("adv", 0.1)):
        config = RunConfig(dataset="fashion_mnist", method=method, norm="linf", eps=eps, profile="smoke", epochs=1,
                           batch_size=32, eval_eps=(0.0, 0.05, 0.1), n_train=64, n_test=12, eval_steps=2,
                           eval_batch=12)
        evaluate_run(train_run(config, results_root=root, data_root=DATA, progress=False), data_root=DATA)
    return root


def test_image_explorer_shows_the_attack_and_every_model(tiny_fashion):
    explorer = ex.ImageExplorer(tiny_fashion, weights_root=tiny_fashion / "none", data_root=DATA, index=3)
    explorer.steps = 10
    explorer._attacks.clear()
    explorer.update()
    assert not explorer.missing and set(explorer.method.options) == {"adv0.1", "ce"}
    assert list(explorer.eps.options) == [0.0, 0.05, 0.1]
    explorer.eps.value = 0.0
    assert explorer.shown["perturbation_size"] == 0.0
    assert torch.equal(explorer.shown["x_adv"], explorer.shown["x"])
    explorer.eps.value = 0.1
    shown = explorer.shown
    assert shown["index"] == 3 and 0 < shown["perturbation_size"] <= 0.1 + 1e-6
    assert float(shown["x_adv"].min()) >= 0 and float(shown["x_adv"].max()) <= 1
    clean_panel, adv_panel, delta_panel = (ax.get_images()[0].get_array() for ax in explorer.axes)
    assert np.allclose(clean_panel, shown["x"][0, 0].numpy()) and np.allclose(adv_panel, shown["x_adv"][0, 0].numpy())
    assert np.allclose(delta_panel, (shown["x_adv"] - shown["x"])[0, 0].numpy())
    for label, run in ((r.config.label, r) for r in explorer.runs["linf"]):
        with torch.no_grad():
            p = torch.softmax(run.model(shown["x_adv"]), 1)[0]
        predicted, confidence = explorer.shown["predictions"][label]["pgd"]
        assert predicted == int(p.argmax()) and confidence == pytest.approx(float(p.max()))
        assert f"({confidence:.2f})" in explorer.text.value
    first = shown["x_adv"]
    explorer.method.value = "ce" if explorer.method.value != "ce" else "adv0.1"
    assert not torch.equal(explorer.shown["x_adv"], first)     # the attack is against the selected model
    explorer.index.value = 5
    assert explorer.shown["index"] == 5 and not torch.equal(explorer.shown["x"], shown["x"])
    frames = explorer.frames(index=5)
    assert len(frames.children[2].children) == 2
