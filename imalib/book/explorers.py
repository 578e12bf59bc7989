"""Interactive explorers of the committed runs: ipywidgets that redraw a figure when a control changes.

Three explorers read the run directories under ``results/`` (nothing is written there):

* :class:`MoonsExplorer`: a Moons model's decision boundary over its test points and, at one eps, the
  eps-squares of the points the paper's PGD calls robust although the exact search breaks them (with
  the misclassified point it found), beside the accuracies under PGD, PGD with restarts and exact.
* :class:`MarginExplorer`: a Moons run's stored per-point margins (IMA, MMA) against the exact distance
  to its boundary; :class:`MarginHistogramExplorer`: Fashion-MNIST margin histograms (Figure 9 style).
* :class:`ImageExplorer`: a Fashion-MNIST test image, its PGD image and perturbation for one model and
  eps, and every model's prediction on both. Image-model weights are not committed; without them the
  explorer says which run directories it needs and the commands that train them.

Each explorer draws into a ``widgets.Image`` (a PNG), so what it last drew is saved with the
notebook's widget state. With a kernel, ``explorer.widget`` is fully interactive. For a page read
without a kernel, ``explorer.frames(...)`` precomputes one figure per value of a control and ties the
controls to a ``widgets.Stack`` with ``widgets.jslink`` (in the browser, no kernel needed).
"""

from __future__ import annotations

import html
import io
import json
import math
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from imalib.config import RunConfig
from imalib.data import load_splits
from imalib.data.base import Splits
from imalib.exact import exact_linf_robust
from imalib.io import load_state, load_torch
from imalib.runs import Run, load_run

MOONS_ORDER = ("ima", "mma", "trades", "adv0.3", "ce")
EXACT_RESOLUTION = 1e-3  # the spacing of the committed exact analyses (imalib.moons_study.RESOLUTION)
RESTARTS_FILE = "analysis-pgd-restarts10.json"
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BLUE, RED = "#2171b5", "#cb181d"
NO_KERNEL_NOTE = (
    "<i>Precomputed frames: these controls work in the page without a kernel. Open the notebook "
    "in Jupyter for the full explorer (every seed and noise level, any image).</i>"
)


# ----------------------------------------------------------------------------------------------
# Shared pieces


def figure_png(fig: Figure, dpi: int, fmt: str = "png") -> bytes:
    """The figure as PNG (or JPEG, for the many frames of a page) bytes."""
    buffer = io.BytesIO()
    if fmt == "jpeg":
        fig.savefig(buffer, format=fmt, dpi=dpi, pil_kwargs={"quality": 85})
    else:
        fig.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _finished_runs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p.parent for p in folder.glob("*/result.json"))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th style='padding:0 8px'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _at(record: dict[str, Any] | None, eps: float) -> float | None:
    """The accuracy a record {"eps": [...], "accuracy": [...]} gives at ``eps`` (None: not there)."""
    if record is None:
        return None
    for e, value in zip(record["eps"], record["accuracy"]):
        if abs(float(e) - eps) < 1e-9:
            return float(value)
    return None


class _Explorer:
    """A figure drawn into an Image widget whenever one of ``controls`` changes; ``timings`` holds the
    seconds each redraw took (drawing and PNG encoding)."""

    dpi = 80

    def __init__(self) -> None:
        self.image = widgets.Image(format="png")
        self.text = widgets.HTML()
        self.timings: list[float] = []
        self.shown: dict[str, Any] = {}
        self._framing = False

    def _watch(self, controls: Sequence[widgets.Widget]) -> None:
        for control in controls:
            control.observe(lambda _change: self.update(), names="value")

    def update(self) -> None:
        began = time.perf_counter()
        self.draw()
        if not self._framing:  # while frames are precomputed, each frame is encoded once, by snapshot()
            self.image.value = figure_png(self.figure, self.dpi)
        self.timings.append(time.perf_counter() - began)

    @contextmanager
    def framing(self) -> Iterator[None]:
        """Precompute frames: controls still redraw the figure, but the live image is encoded only once,
        at the end."""
        self._framing = True
        try:
            yield
        finally:
            self._framing = False
            self.update()

    def draw(self) -> None:  # pragma: no cover - every explorer defines it
        raise NotImplementedError

    def snapshot(self) -> widgets.VBox:
        """What the explorer shows now, as a frame of a page without a kernel (JPEG: 35 frames stay small)."""
        return widgets.VBox(
            [
                widgets.Image(value=figure_png(self.figure, self.dpi, "jpeg"), format="jpeg"),
                widgets.HTML(self.text.value),
            ]
        )

    def snapshot_grid(
        self, first: widgets.ValueWidget, second: widgets.ValueWidget, first_values: Sequence[Any] | None = None
    ) -> list[list[widgets.VBox]]:
        """One snapshot per (first, second) pair of control values, rows by ``first`` (all its options, or
        ``first_values``): the frames of a page without a kernel."""
        rows = []
        with self.framing():
            for a in list(first.options if first_values is None else first_values):
                first.value = a
                row = []
                for b in list(second.options):
                    second.value = b
                    row.append(self.snapshot())
                rows.append(row)
        return rows

    figure: Figure


def _stack_frames(
    frames: Sequence[Sequence[widgets.Widget]], outer: widgets.Widget, inner: widgets.Widget
) -> widgets.Stack:
    """A Stack of Stacks: ``outer``'s index selects the row, ``inner``'s index the frame in it (jslinked,
    so the selection works in the browser without a kernel)."""
    rows = [widgets.Stack(children=list(row), selected_index=0) for row in frames]
    for row in rows:
        widgets.jslink((inner, "index"), (row, "selected_index"))
    stack = widgets.Stack(children=rows, selected_index=0)
    widgets.jslink((outer, "index"), (stack, "selected_index"))
    return stack


# ----------------------------------------------------------------------------------------------
# Moons: which runs exist


@dataclass(frozen=True)
class MoonsKey:
    """A Moons run of the main protocol (default method parameters): method label, make_moons noise, seed."""

    label: str
    noise: float
    seed: int


def moons_runs(results_root: str | Path = "results") -> dict[MoonsKey, Path]:
    """Every finished Moons run with the method's default parameters, by (label, noise, seed)."""
    found: dict[MoonsKey, Path] = {}
    for path in _finished_runs(Path(results_root) / "moons"):
        config = json.loads((path / "config.json").read_text())
        if config.get("method_params"):
            continue  # the ablations (fused margin update, other margin step) are not part of the grid
        label = f"{config['method']}{config['eps']:g}" if config["method"] in ("adv", "rand") else config["method"]
        key = MoonsKey(label, float(config["data_params"].get("noise", 0.1)), int(config["seed"]))
        found[key] = path
    if not found:
        raise FileNotFoundError(
            f"no finished Moons run under {Path(results_root) / 'moons'}; give the results "
            f"root that holds them (results_root=...) or run the Moons notebook first"
        )
    return found


def _ordered(labels: set[str]) -> list[str]:
    return [label for label in MOONS_ORDER if label in labels] + sorted(labels - set(MOONS_ORDER))


@dataclass
class _MoonsData:
    """What the Moons explorer draws from one run directory, read once."""

    run: Run
    splits: Splits
    robust: torch.Tensor  # (eps, test) the paper's PGD verdicts (robust.pt)
    exact: dict[str, Any]  # analysis-exact.json
    restarts: dict[str, Any] | None  # analysis-pgd-restarts10.json, where it was computed
    offsets: torch.Tensor  # per test point, the cached nearest-witness offset (inf: none)
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    witnesses: dict[int, np.ndarray] | None = None  # test index -> misclassified point inside its square


def _load_moons(path: Path) -> _MoonsData:
    run = load_run(path)
    exact = _read_json(path / "analysis-exact.json")
    if exact is None:
        raise FileNotFoundError(
            f"{path} has no analysis-exact.json: run the Moons notebook (it computes and "
            f"caches the exact analysis) before exploring this run"
        )
    config = run.config
    splits = load_splits(
        "moons", n_train=config.n_train, n_test=config.n_test, seed=config.seed, params=dict(config.data_params)
    )
    offsets = torch.tensor([math.inf if v is None else v for v in exact["witness_offset"]], dtype=torch.float64)
    robust = torch.load(path / "robust.pt", weights_only=True)
    return _MoonsData(run, splits, robust, exact, _read_json(path / RESTARTS_FILE), offsets)


class MoonsExplorer(_Explorer):
    """Method, seed, noise level and eps of the Moons runs: boundary, test points, the points PGD misses.

    ``shown`` holds what the last draw showed: the run directory, eps, the accuracies (``PGD``,
    ``PGD×20`` or None where that analysis was not run, ``exact``), the test indices PGD calls robust
    although a misclassified point lies in their eps-square (``missed``) and the witnesses drawn.
    """

    xlim = (-1.6, 2.6)
    ylim = (-1.1, 1.6)
    grid_points = 160

    def __init__(
        self,
        results_root: str | Path = "results",
        *,
        method: str = "ima",
        seed: int | None = None,
        noise: float | None = None,
        eps: float | None = None,
    ) -> None:
        super().__init__()
        self.runs = moons_runs(results_root)
        self._cache: dict[Path, _MoonsData] = {}
        labels = _ordered({k.label for k in self.runs})
        seeds = sorted({k.seed for k in self.runs})
        noises = sorted({k.noise for k in self.runs})
        self.method = widgets.Dropdown(
            options=labels, value=method if method in labels else labels[0], description="method"
        )
        self.seed = widgets.Dropdown(options=seeds, value=seeds[0] if seed is None else seed, description="seed")
        self.noise = widgets.Dropdown(
            options=noises, value=(0.1 if 0.1 in noises else noises[0]) if noise is None else noise, description="noise"
        )
        eps_grid = self._data().run.config.eval_eps
        self.eps = widgets.SelectionSlider(
            options=list(eps_grid), value=eps_grid[-1] if eps is None else eps, description="eps"
        )
        self.figure = Figure(figsize=(5.6, 4.2))
        self.ax = self.figure.add_subplot()
        self._drawn_run: Path | None = None
        self._background: list[Any] = []
        self.points = self.ax.scatter([], [], s=2, alpha=0.5)
        self.squares = PatchCollection([], facecolor="none", edgecolor="0.15", linewidth=0.6, linestyle="--")
        self.ax.add_collection(self.squares)
        self.witness_marks = self.ax.scatter(
            [],
            [],
            marker="X",
            s=30,
            c=RED,
            edgecolors="k",
            linewidths=0.4,
            label="misclassified point (exact search)",
            zorder=5,
        )
        self.ax.set_xlim(*self.xlim)
        self.ax.set_ylim(*self.ylim)
        self.ax.set_xticks([])
        self.ax.set_yticks([])
        self.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92)
        self._watch([self.method, self.seed, self.noise, self.eps])
        self.update()
        self.widget = widgets.VBox(
            [widgets.HBox([self.method, self.seed, self.noise]), self.eps, widgets.HBox([self.image, self.text])]
        )

    # -- data

    def key(self) -> MoonsKey:
        return MoonsKey(self.method.value, float(self.noise.value), int(self.seed.value))

    def _data(self, key: MoonsKey | None = None) -> _MoonsData:
        key = key or self.key()
        if key not in self.runs:
            raise KeyError(f"no finished Moons run for {key.label}, noise {key.noise:g}, seed {key.seed}")
        path = self.runs[key]
        if path not in self._cache:
            self._cache[path] = _load_moons(path)
        return self._cache[path]

    def missed(self, data: _MoonsData, eps: float) -> list[int]:
        """Test indices the paper's PGD calls robust at ``eps`` although the exact search found a
        misclassified point inside their eps-square (from robust.pt and the cached exact analysis)."""
        if eps <= 0:
            return []
        k = list(data.run.config.eval_eps).index(eps)
        hits = data.robust[k] & (data.offsets <= eps + 1e-9)
        return [int(i) for i in hits.nonzero().flatten()]

    def _witnesses(self, data: _MoonsData) -> dict[int, np.ndarray]:
        """Per test point PGD misses at some eps, the nearest misclassified point: one exact search over
        those points only (the cache keeps the offsets, not the points)."""
        if data.witnesses is None:
            eps_grid = [e for e in data.run.config.eval_eps if e > 0]
            points = sorted({i for e in eps_grid for i in self.missed(data, e)})
            data.witnesses = {}
            if points:
                idx = torch.tensor(points)
                found = exact_linf_robust(
                    data.run.model,
                    data.splits.test.inputs(idx),
                    data.splits.test.y[idx],
                    eps_grid,
                    resolution=EXACT_RESOLUTION,
                )
                for j, i in enumerate(points):
                    if bool(torch.isfinite(found.witness[j]).all()):
                        data.witnesses[i] = found.witness[j].numpy().astype(np.float64)
        return data.witnesses

    def accuracies(self, data: _MoonsData, eps: float) -> dict[str, float | None]:
        record = data.run.record
        return {
            "PGD": _at({"eps": record.eps, "accuracy": record.accuracy}, eps),
            "PGD×20": _at(data.restarts, eps),
            "exact": _at(data.exact, eps),
        }

    # -- drawing

    def _draw_background(self, data: _MoonsData) -> None:
        for artist in self._background:
            artist.remove()
        if data.grid is None:
            from imalib.book.plots import decision_grid

            data.grid = decision_grid(data.run.model, self.xlim, self.ylim, n=self.grid_points)
        gx, gy, diff = data.grid
        self._background = [
            self.ax.contourf(
                gx, gy, diff > 0, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fcbba1"], alpha=0.6, zorder=0
            ),
            self.ax.contour(gx, gy, diff, levels=[0.0], colors="k", linewidths=1.2, zorder=1),
        ]
        test = data.splits.test
        self.points.set_offsets(test.inputs().numpy())
        self.points.set_color([RED if label == 1 else BLUE for label in test.y.tolist()])
        self._drawn_run = data.run.path

    def draw(self) -> None:
        data = self._data()
        eps_grid = list(data.run.config.eval_eps)
        if list(self.eps.options) != eps_grid:
            self.eps.options = eps_grid
        eps = float(self.eps.value)
        if self._drawn_run != data.run.path:
            self._draw_background(data)
        missed = self.missed(data, eps)
        witnesses = self._witnesses(data)
        x = data.splits.test.inputs().numpy()
        self.squares.set_paths([Rectangle((x[i, 0] - eps, x[i, 1] - eps), 2 * eps, 2 * eps) for i in missed])
        # a witness is drawn for eps only when it lies inside that eps-square
        shown = [i for i in missed if i in witnesses and np.abs(witnesses[i] - x[i]).max() <= eps + 1e-6]
        marks = np.array([witnesses[i] for i in shown]).reshape(-1, 2)
        self.witness_marks.set_offsets(marks)
        key = self.key()
        self.ax.set_title(
            f"{key.label}, noise {key.noise:g}, seed {key.seed}, eps {eps:g}: "
            f"{len(missed)} test points PGD calls robust, exact breaks",
            fontsize=8,
        )
        accuracy = self.accuracies(data, eps)
        self.shown = {
            "run": data.run.path,
            "eps": eps,
            "accuracy": accuracy,
            "missed": missed,
            "witnessed": shown,
            "witnesses": marks,
        }
        self.text.value = self._describe(accuracy, eps, len(missed), len(shown))

    @staticmethod
    def _describe(accuracy: dict[str, float | None], eps: float, missed: int, witnessed: int) -> str:
        rows = [
            (name, "not computed for this run" if value is None else f"{value:.4f}")
            for name, value in (
                ("PGD (paper's protocol)", accuracy["PGD"]),
                ("PGD×20 (10 restarts per loss)", accuracy["PGD×20"]),
                ("exact", accuracy["exact"]),
            )
        ]
        note = (
            f"<p>{missed} points PGD calls robust at eps {eps:g} are not (dashed squares);"
            f" {witnessed} of them with the misclassified point drawn.</p>"
        )
        return f"<b>accuracy at eps {eps:g}</b>" + _table(["evaluation", "accuracy"], rows) + note

    # -- frames for a page without a kernel

    def frames(self, *, seed: int = 0, noise: float = 0.1, methods: Sequence[str] | None = None) -> widgets.VBox:
        """Every method x eps for one seed and noise level, precomputed and tied to a method dropdown and an
        eps slider in the browser (jslink): the explorer of a page read without a kernel."""
        labels = [m for m in (methods or self.method.options) if MoonsKey(m, float(noise), seed) in self.runs]
        if not labels:
            raise KeyError(f"no finished Moons run for noise {noise:g}, seed {seed}")
        self.seed.value, self.noise.value = seed, noise
        rows = self.snapshot_grid(self.method, self.eps, labels)
        method = widgets.Dropdown(options=labels, index=0, description="method")
        eps = widgets.SelectionSlider(options=list(self.eps.options), index=0, description="eps")
        stack = _stack_frames(rows, method, eps)
        note = widgets.HTML(f"{NO_KERNEL_NOTE} Seed {seed}, make_moons noise {noise:g}.")
        return widgets.VBox([note, widgets.HBox([method, eps]), stack])


# ----------------------------------------------------------------------------------------------
# Margins


def margin_cap(config: Any) -> float:
    """The largest margin a method stores: eps_max for IMA, MMA's bisection end search_max * d_max."""
    if config.method == "mma":
        return float(dict(config.method_params).get("search_max", 1.05)) * config.eps
    return float(config.eps)


class MarginExplorer(_Explorer):
    """A Moons run's stored margins (IMA, MMA) against each training point's exact L-inf distance to the
    final boundary (analysis-calibration.json), by method and seed; points under the cap highlighted.

    ``shown``: the run, the cap, the arrays drawn and the counts listed.
    """

    def __init__(self, results_root: str | Path = "results", *, noise: float = 0.1) -> None:
        super().__init__()
        self.runs = {
            k: p
            for k, p in moons_runs(results_root).items()
            if k.noise == noise and (p / "analysis-calibration.json").exists()
        }
        if not self.runs:
            raise FileNotFoundError(
                f"no Moons run at noise {noise:g} has analysis-calibration.json under "
                f"{results_root}; run the Moons notebook (it computes the calibration)"
            )
        labels = _ordered({k.label for k in self.runs})
        self.noise_level = noise
        self.method = widgets.Dropdown(options=labels, description="method")
        self.seed = widgets.Dropdown(options=sorted({k.seed for k in self.runs}), description="seed")
        self.figure = Figure(figsize=(4.8, 4.2))
        self.ax = self.figure.add_subplot()
        self.capped = self.ax.scatter([], [], s=3, c="0.6", alpha=0.5, label="stored margin at the cap")
        self.under = self.ax.scatter([], [], s=3, c="#d95f02", alpha=0.6, label="stored margin under the cap")
        (self.diagonal,) = self.ax.plot([], [], "k--", lw=1)
        self.cap_line = self.ax.axhline(0, color="0.3", lw=0.8, ls=":")
        self.ax.set_xlabel("exact L-inf distance to the boundary")
        self.ax.set_ylabel("stored margin estimate")
        self.ax.legend(fontsize=7, loc="lower right", markerscale=3)
        self.figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
        self._watch([self.method, self.seed])
        self.update()
        self.widget = widgets.VBox([widgets.HBox([self.method, self.seed]), widgets.HBox([self.image, self.text])])

    def draw(self) -> None:
        key = MoonsKey(self.method.value, self.noise_level, int(self.seed.value))
        if key not in self.runs:
            self.text.value = f"no calibrated run for {key.label}, seed {key.seed}"
            self.shown = {"run": None}
            return
        path = self.runs[key]
        calibration = json.loads((path / "analysis-calibration.json").read_text())
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
        stored, exact = np.array(calibration["stored"]), np.array(calibration["exact"])
        cap = margin_cap(config)
        under = stored < cap * (1 - 1e-4)
        self.under.set_offsets(np.column_stack([exact[under], stored[under]]))
        self.capped.set_offsets(np.column_stack([exact[~under], stored[~under]]))
        top = float(max(exact.max(), stored.max())) * 1.05
        self.diagonal.set_data([0, top], [0, top])
        self.cap_line.set_ydata([cap, cap])
        self.ax.set_xlim(0, top)
        self.ax.set_ylim(0, top)
        self.ax.set_title(f"{key.label}, noise {key.noise:g}, seed {key.seed}: cap {cap:g}", fontsize=9)
        ok = under & (exact > 0)
        over = float((stored[ok] > 1.1 * exact[ok]).mean()) if ok.any() else float("nan")
        ratio = float(np.median(stored[ok] / exact[ok])) if ok.any() else float("nan")
        self.shown = {
            "run": path,
            "cap": cap,
            "stored": stored,
            "exact": exact,
            "under": under,
            "n_under": int(under.sum()),
            "share_over": over,
        }
        rows = [
            ("training points", str(len(stored))),
            ("stored margin under the cap", str(int(under.sum()))),
            ("of those, stored > 1.1 × exact", f"{over:.3f}"),
            ("median stored / exact (under cap)", f"{ratio:.3f}"),
            ("exact distances searched up to", f"{calibration['cap']:.3g}"),
        ]
        self.text.value = (
            "<b>stored margins against exact distances</b>"
            + _table(["", ""], rows)
            + "<p>Above the dashed line: overestimated. At the cap a method cannot report more, "
            "so points farther away are underestimated by construction.</p>"
        )

    def frames(self) -> widgets.VBox:
        """Every method x seed, precomputed and tied to two dropdowns in the browser (jslink)."""
        labels, seeds = list(self.method.options), list(self.seed.options)
        rows = self.snapshot_grid(self.method, self.seed)
        method = widgets.Dropdown(options=labels, index=0, description="method")
        seed = widgets.Dropdown(options=seeds, index=0, description="seed")
        return widgets.VBox(
            [widgets.HTML(NO_KERNEL_NOTE), widgets.HBox([method, seed]), _stack_frames(rows, method, seed)]
        )


class MarginHistogramExplorer(_Explorer):
    """Fashion-MNIST: the histogram of a run's final per-sample margins (margins.pt), by method and norm,
    in the style of the paper's Figure 9. ``shown``: the run, the counts and edges drawn, the mean."""

    bins = 30

    def __init__(self, results_root: str | Path = "results", dataset: str = "fashion_mnist") -> None:
        super().__init__()
        self.runs: dict[tuple[str, str], Path] = {}
        stored = [p for p in _finished_runs(Path(results_root) / dataset) if (p / "margins.pt").exists()]
        configs = {p: json.loads((p / "config.json").read_text()) for p in stored}
        for path in sorted(stored, key=lambda p: configs[p]["seed"]):  # per method and norm, the lowest seed
            self.runs.setdefault((configs[path]["method"], configs[path]["norm"]), path)
        if not self.runs:
            raise FileNotFoundError(
                f"no {dataset} run with margins.pt under {results_root}; the IMA and MMA runs "
                f"store them (run the {dataset} notebook)"
            )
        self.dataset = dataset
        self.method = widgets.ToggleButtons(options=_ordered({m for m, _ in self.runs}), description="method")
        self.norm = widgets.ToggleButtons(options=sorted({n for _, n in self.runs}), description="norm")
        self.figure = Figure(figsize=(5.0, 3.2))
        self.ax = self.figure.add_subplot()
        self.figure.subplots_adjust(left=0.13, right=0.97, bottom=0.16, top=0.9)
        self._watch([self.method, self.norm])
        self.update()
        self.widget = widgets.VBox([self.method, self.norm, widgets.HBox([self.image, self.text])])

    def draw(self) -> None:
        self.ax.clear()
        key = (self.method.value, self.norm.value)
        if key not in self.runs:
            self.ax.axis("off")
            self.text.value = f"no {self.dataset} run of {key[0]} under {key[1]} with stored margins"
            self.shown = {"run": None}
            return
        self.ax.axis("on")
        path = self.runs[key]
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
        values = load_torch(path / "margins.pt").numpy().astype(np.float64)
        eps_max = config.eps
        counts, edges, _ = self.ax.hist(
            values, bins=self.bins, range=(0, max(eps_max, float(values.max()))), color="#4c72b0"
        )
        self.ax.axvline(eps_max, color="k", ls=":", lw=1)
        self.ax.set_xlabel(f"estimated margin ({key[1]})")
        self.ax.set_ylabel("training samples")
        self.ax.set_title(
            f"{self.dataset} {key[0]} ({key[1]}, eps_max {eps_max:g}, seed {config.seed}): mean {values.mean():.3f}",
            fontsize=9,
        )
        self.shown = {"run": path, "counts": counts, "edges": edges, "mean": float(values.mean())}
        rows = [
            ("training samples", str(len(values))),
            ("mean margin", f"{values.mean():.3f}"),
            ("share at eps_max or above", f"{float((values >= eps_max * (1 - 1e-4)).mean()):.3f}"),
            ("profile", config.profile),
            ("training seed", str(config.seed)),
        ]
        self.text.value = "<b>final margins</b>" + _table(["", ""], rows)

    def frames(self) -> widgets.VBox:
        """Every method x norm, precomputed and tied to two toggles in the browser (jslink)."""
        methods, norms = list(self.method.options), list(self.norm.options)
        rows = self.snapshot_grid(self.method, self.norm)
        method = widgets.ToggleButtons(options=methods, index=0, description="method")
        norm = widgets.ToggleButtons(options=norms, index=0, description="norm")
        return widgets.VBox([widgets.HTML(NO_KERNEL_NOTE), method, norm, _stack_frames(rows, method, norm)])


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST images


def train_command(config: Any, output: str | Path) -> str:
    """The `python -m imalib train` command that trains ``config`` into ``output`` (same run directory name)."""
    parts = [
        "python",
        "-m",
        "imalib",
        "train",
        "--dataset",
        config.dataset,
        "--method",
        config.method,
        "--norm",
        config.norm,
        "--eps",
        f"{config.eps:g}",
        "--profile",
        config.profile,
        "--seed",
        str(config.seed),
        "--epochs",
        str(config.epochs),
        "--batch-size",
        str(config.batch_size),
    ]
    if config.n_train is not None:
        parts += ["--n-train", str(config.n_train)]
    if config.n_test is not None:
        parts += ["--n-test", str(config.n_test)]
    for key, value in config.method_params:
        parts += ["--param", f"{key}={value}"]
    parts += ["--output", str(output), "--quiet"]
    return " ".join(shlex.quote(p) for p in parts)


def missing_weights_message(missing: Sequence[Run], weights_root: str | Path) -> str:
    """What the image explorer needs: the run directories without weights and the commands that train them."""
    minutes = sum(r.record.train_seconds for r in missing) / 60
    lines = [
        (
            f"The image explorer needs the trained weights (model.pt) of {len(missing)} Fashion-MNIST run(s); "
            f"image-model weights are not committed. Missing:"
        )
    ]
    lines += [f"  {r.path}" for r in missing]
    lines += [
        (
            f"Train them into {weights_root} (about {minutes:.0f} CPU minutes in all, by the records' "
            f"train_seconds; results/ is left untouched), then create the explorer with "
            f"weights_root={str(weights_root)!r} (paths are relative to the folder this runs in):"
        )
    ]
    lines += [f"  {train_command(r.config, weights_root)}" for r in missing]
    return "\n".join(lines)


class ImageExplorer(_Explorer):
    """A Fashion-MNIST test image under one model's PGD at one eps: clean image, PGD image, perturbation,
    and every model's prediction and confidence on the clean and on that PGD image.

    Records come from ``results_root``; weights from ``weights_root`` (the same run directory names, as
    `python -m imalib train --output WEIGHTS_ROOT` writes them) or, where committed, from the record's
    own directory. Runs without weights are listed in ``missing`` with the commands that train them.
    """

    steps: int | None = None  # PGD steps (None: each run's eval_steps, the paper's 100)
    dpi = 70

    def __init__(
        self,
        results_root: str | Path = "results",
        *,
        weights_root: str | Path = "weights",
        dataset: str = "fashion_mnist",
        data_root: str | Path | None = None,
        norm: str = "linf",
        index: int = 0,
    ) -> None:
        super().__init__()
        self.dataset, self.weights_root, self.data_root = dataset, Path(weights_root), data_root
        loaded = [load_run(p, require_weights=False) for p in _finished_runs(Path(results_root) / dataset)]
        if not loaded:
            raise FileNotFoundError(f"no finished {dataset} run under {results_root}")
        # one model per row of the tables: its lowest training seed
        first: dict[tuple[str, str], Run] = {}
        for record in sorted(loaded, key=lambda r: r.config.seed):
            first.setdefault((record.config.label, record.config.norm), record)
        records = list(first.values())
        self.runs: dict[str, list[Run]] = {}
        self.missing: list[Run] = []
        for record in records:
            run = self._with_weights(record)
            if run is None:
                self.missing.append(record)
            else:
                self.runs.setdefault(run.config.norm, []).append(run)
        self.message = missing_weights_message(self.missing, self.weights_root) if self.missing else ""
        self._splits: dict[tuple[Any, ...], Splits] = {}
        self._attacks: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        if not self.runs:
            self.widget = widgets.HTML(f"<pre>{html.escape(self.message)}</pre>")
            self.figure = Figure()
            return
        norms = sorted(self.runs)
        self.norm = widgets.Dropdown(options=norms, value=norm if norm in norms else norms[0], description="norm")
        self.method = widgets.Dropdown(options=self._labels(), description="model")
        self.eps = widgets.SelectionSlider(options=self._eps_grid(), description="eps")
        self.eps.value = self.eps.options[min(3, len(self.eps.options) - 1)]
        self.index = widgets.BoundedIntText(value=index, min=0, max=len(self._test()) - 1, description="image")
        self.figure = Figure(figsize=(6.6, 2.5))
        self.axes = self.figure.subplots(1, 3)
        self.figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8, wspace=0.08)
        self.norm.observe(self._norm_changed, names="value")
        self._watch([self.method, self.eps, self.index])
        self.update()
        note = widgets.HTML(f"<pre>{html.escape(self.message)}</pre>") if self.missing else widgets.HTML()
        self.widget = widgets.VBox(
            [widgets.HBox([self.norm, self.method, self.index]), self.eps, widgets.HBox([self.image, self.text]), note]
        )

    def _with_weights(self, record: Run) -> Run | None:
        for folder in (self.weights_root / self.dataset / record.path.name, record.path):
            if (folder / "model.pt").exists():
                if folder == record.path:
                    return load_run(folder)
                run = load_run(record.path, require_weights=False)
                load_state(run.model, load_torch(folder / "model.pt"), folder / "model.pt")
                run.model.eval()
                return Run(path=record.path, model=run.model, config=run.config, record=run.record)
        return None

    def _labels(self) -> list[str]:
        return _ordered({r.config.label for r in self.runs[self.norm.value]})

    def _eps_grid(self) -> list[float]:
        return sorted({e for r in self.runs[self.norm.value] for e in r.config.eval_eps})

    def _norm_changed(self, _change: Any) -> None:
        with self.image.hold_trait_notifications():
            self.method.options = self._labels()
            self.eps.options = self._eps_grid()
        self.update()

    def _run(self) -> Run:
        return next(r for r in self.runs[self.norm.value] if r.config.label == self.method.value)

    def _test(self, run: Run | None = None) -> Any:
        config = (run or self.runs[self.norm.value][0]).config
        key = (config.n_test, config.seed)
        if key not in self._splits:
            self._splits[key] = load_splits(
                self.dataset,
                root=self.data_root,
                n_train=1,
                n_test=config.n_test,
                seed=config.seed,
                params=dict(config.data_params),
            )
        return self._splits[key].test

    def attack(self, run: Run, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps grid, PGD images at every eps of the grid) of one test image against ``run``'s model: one
        batched cross-entropy PGD (random start, step eps/10, seed 0), cached per (run, image)."""
        key = (run.path, index, self.norm.value)
        if key not in self._attacks:
            from imalib.attacks import pgd

            test = self._test(run)
            x, y = test.inputs(torch.tensor([index])), test.y[index : index + 1]
            grid = torch.tensor(self._eps_grid(), dtype=torch.float32)
            xs, ys = x.repeat(len(grid), 1, 1, 1), y.repeat(len(grid))
            adv = xs.clone()
            live = grid > 0
            if bool(live.any()):
                steps = self.steps or run.config.eval_steps
                adv[live] = pgd(
                    run.model,
                    xs[live],
                    ys[live],
                    grid[live],
                    norm=run.config.norm,
                    steps=steps,
                    step_size=grid[live] / 10,
                    clip=(0.0, 1.0),
                    generator=torch.Generator(device=xs.device).manual_seed(0),
                )
            self._attacks[key] = (grid, adv)
        return self._attacks[key]

    @torch.no_grad()
    def _predict(self, run: Run, x: torch.Tensor) -> tuple[int, float]:
        p = torch.softmax(run.model(x), dim=1)[0]
        label = int(p.argmax())
        return label, float(p[label])

    def draw(self) -> None:
        run, index, eps = self._run(), int(self.index.value), float(self.eps.value)
        test = self._test(run)
        x, y = test.inputs(torch.tensor([index])), int(test.y[index])
        grid, adv = self.attack(run, index)
        x_adv = adv[int((grid - eps).abs().argmin())].unsqueeze(0)
        delta = (x_adv - x)[0, 0].numpy()
        size = float(np.abs(delta).max()) if run.config.norm == "linf" else float(np.sqrt((delta**2).sum()))
        label, confidence = self._predict(run, x_adv)
        names = FASHION_CLASSES if self.dataset == "fashion_mnist" else tuple(str(i) for i in range(10))
        for ax in self.axes:
            ax.clear()
            ax.set_xticks([])
            ax.set_yticks([])
        self.axes[0].imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        self.axes[0].set_title(f"clean #{index}\ntrue: {names[y]}", fontsize=8)
        self.axes[1].imshow(x_adv[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        self.axes[1].set_title(
            f"PGD vs {run.config.label}, eps {eps:g}\n→ {names[label]} ({confidence:.2f})", fontsize=8
        )
        bound = max(float(np.abs(delta).max()), 1e-6)
        self.axes[2].imshow(delta, cmap="RdBu_r", vmin=-bound, vmax=bound)
        self.axes[2].set_title(f"perturbation ({run.config.norm} {size:.3g})\ncolour range ±{bound:.3g}", fontsize=8)
        predictions = {}
        rows = []
        for other in sorted(
            self.runs[self.norm.value],
            key=lambda r: _ordered({r.config.label for r in self.runs[self.norm.value]}).index(r.config.label),
        ):
            clean = self._predict(other, x)
            attacked = self._predict(other, x_adv)
            predictions[other.config.label] = {"clean": clean, "pgd": attacked}
            rows.append(
                (other.config.label, f"{names[clean[0]]} ({clean[1]:.2f})", f"{names[attacked[0]]} ({attacked[1]:.2f})")
            )
        self.shown = {
            "run": run.path,
            "index": index,
            "eps": eps,
            "label": y,
            "x": x,
            "x_adv": x_adv,
            "perturbation_size": size,
            "predictions": predictions,
        }
        self.text.value = f"<b>each model on image #{index} (true: {html.escape(names[y])})</b>" + _table(
            ["model", "clean", f"PGD image vs {run.config.label}"], rows
        )

    def frames(self, *, index: int = 0) -> widgets.Widget:
        """Every model x eps for one image, precomputed and tied to a dropdown and a slider (jslink)."""
        if not self.runs:
            return self.widget
        self.index.value = index
        labels = list(self.method.options)
        rows = self.snapshot_grid(self.method, self.eps)
        method = widgets.Dropdown(options=labels, index=0, description="model")
        eps = widgets.SelectionSlider(options=list(self.eps.options), index=0, description="eps")
        return widgets.VBox(
            [
                widgets.HTML(f"{NO_KERNEL_NOTE} Norm {self.norm.value}, image #{index}."),
                widgets.HBox([method, eps]),
                _stack_frames(rows, method, eps),
            ]
        )


def timed(change: Callable[[], None], explorer: _Explorer) -> float:
    """Seconds one control change took to redraw (the explorer records each redraw)."""
    before = len(explorer.timings)
    began = time.perf_counter()
    change()
    assert len(explorer.timings) > before, "the change did not redraw"
    return time.perf_counter() - began
