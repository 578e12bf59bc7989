"""Execute the book's chapters with papermill: ``python -m imalib.book``.

Each chapter is a MyST-Markdown notebook ``notebooks/<name>.md`` (jupytext), the
single source of its prose and cells. It is converted to a notebook in memory,
run with the given parameters, and its executed copy written (atomically) to
``book/generated/``, from which the Jupyter Book is built without re-executing
anything. Chapters are cache-aware: finished runs under the results root are
loaded, not retrained.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KERNEL_START_TIMEOUT = 300  # seconds
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("verdict", "method", "equilibrium", "moons", "fashion_mnist", "svhn", "covid", "reproducing")
# The chapters that train and evaluate runs, and so take a ``device`` parameter.
TRAINING_CHAPTERS = ("moons", "fashion_mnist", "svhn", "covid")


def to_notebook(source: Path) -> Any:
    """The notebook of a MyST-Markdown chapter (jupytext), with a kernelspec papermill can start."""
    import jupytext

    if not source.exists():
        raise FileNotFoundError(
            f"no chapter {source}: the chapters are {', '.join(f'{n}.md' for n in NOTEBOOKS)} in {ROOT / 'notebooks'}"
        )
    notebook = jupytext.read(source)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return notebook


PATH_PARAMETERS = ("results_root", "data_root")


def portable(parameters: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """``parameters`` with every path inside the repository made relative to ``cwd`` (the notebook's folder),
    so that the executed notebooks (and the book) hold no machine's absolute path."""
    shown = dict(parameters)
    for key in PATH_PARAMETERS:
        value = shown.get(key)
        if isinstance(value, (str, os.PathLike)) and Path(value).is_absolute():
            path = Path(value).resolve()
            if path == ROOT or ROOT in path.parents:
                shown[key] = os.path.relpath(path, cwd.resolve())
    return shown


def hide_injected(path: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` (the book shows the chapter's own parameters)
    and drop the temporary file names papermill records in the notebook's metadata."""
    import nbformat

    notebook = nbformat.read(path, 4)
    for key in ("input_path", "output_path"):
        notebook.metadata.get("papermill", {}).pop(key, None)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)


def execute(
    name: str,
    parameters: dict[str, Any],
    *,
    source: Path | None = None,
    target: Path | None = None,
    cwd: Path | None = None,
) -> Path:
    """Run the chapter ``notebooks/<name>.md`` with ``parameters``; write the executed copy atomically."""
    import papermill

    source = source or ROOT / "notebooks" / f"{name}.md"
    target = target or ROOT / "book" / "generated" / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    cwd = cwd or source.parent
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=target.parent)
    os.close(handle)
    try:
        papermill.execute_notebook(
            to_notebook(source),
            tmp,
            parameters=portable(parameters, cwd),
            cwd=str(cwd),
            kernel_name="python3",
            progress_bar=False,
            # nbclient's default of 60 s for a kernel to start is short on a loaded 2-core machine (a kernel
            # imports torch while other test workers train); a kernel that never starts still fails, later
            start_timeout=KERNEL_START_TIMEOUT,
        )
        hide_injected(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imalib.book", description=__doc__)
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--only", nargs="*", choices=NOTEBOOKS, help="run only these notebooks")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="report the finished runs only; never start training (the book build in CI)",
    )
    parser.add_argument("--results-root", default=str(ROOT / "results"))
    parser.add_argument("--data-root", default=os.environ.get("IMALIB_DATA_ROOT"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--device",
        default="auto",
        help="where the chapters train and evaluate: auto (CUDA if available, else CPU), cpu, cuda",
    )
    args = parser.parse_args(argv)
    from imalib.device import device_name
    from imalib.errors import ConfigError

    try:
        device = device_name(args.device)
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")
    for name in args.only or NOTEBOOKS:
        parameters = {
            "profile": args.profile,
            "train_missing": not args.no_train,
            "results_root": args.results_root,
            "data_root": args.data_root,
            "workers": args.workers,
        }
        if name in TRAINING_CHAPTERS:
            parameters["device"] = device
        print(f"executing notebooks/{name}.md ({args.profile})", file=sys.stderr, flush=True)
        execute(name, parameters)
    return 0
