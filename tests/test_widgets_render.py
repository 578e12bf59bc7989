"""Widgets without a kernel, in headless Chromium: the book's own widget manager (book/_static) renders the
saved widget state, runs jslink in the browser, and the pages request nothing from the network.

The first test needs only Chromium (it embeds a small explorer-like widget itself); the others check the
built book's pages that hold widgets (`_build/html`, built by `make test`) and skip without a build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("IMALIB_BOOK_HTML", ROOT / "_build" / "html"))   # another built book: set this
BUNDLE = ROOT / "book" / "_static" / "jupyter-widgets" / "embed.js"
STATE = "application/vnd.jupyter.widget-state+json"
VIEW = "application/vnd.jupyter.widget-view+json"
BROWSER = os.environ.get("IMALIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if BROWSER is None and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    raise RuntimeError("no Chromium for the widget check: CI must run it (apt-get install chromium)")

needs_browser = pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is needed (apt-get install chromium)")


def render(url: str, tmp_path: Path) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the http(s) URLs the page itself requested), offline."""
    netlog = tmp_path / "netlog.json"
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
               f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}", "--virtual-time-budget=15000",
               "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    # Chromium's own background requests carry the initiator "not an origin"; a page's carry the page's origin
    requested = [e["params"]["url"] for e in log["events"]
                 if names.get(e["type"]) == "URL_REQUEST_START_JOB" and e.get("params", {}).get("initiator")
                 not in (None, "not an origin") and e["params"]["url"].startswith(("http:", "https:"))]
    return done.stdout, requested


def rendered_html(dom: str) -> list[str]:
    """The contents of the HTML widgets the widget manager rendered."""
    return re.findall(r'class="widget-html-content">(.*?)</div>', dom, flags=re.DOTALL)


@needs_browser
def test_the_local_bundle_renders_saved_state_and_runs_jslink(tmp_path):
    import ipywidgets as widgets
    from ipywidgets.embed import embed_minimal_html

    frames = [widgets.HTML(f"<b>frame {i}</b>") for i in range(4)]
    stack = widgets.Stack(children=frames, selected_index=0)
    slider = widgets.SelectionSlider(options=[0.0, 0.1, 0.2, 0.3], index=0, description="eps")
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    slider.index = 2   # without a front end the link does nothing in Python: the saved stack still says 0
    assert stack.selected_index == 0
    page = tmp_path / "page.html"
    embed_minimal_html(page, views=[widgets.VBox([slider, stack])], title="jslink offline",
                       embed_url=BUNDLE.as_uri(), requirejs=False, cors=False)
    text = page.read_text()
    assert not re.findall(r'<script[^>]+src="(https?:[^"]+)"', text)
    dom, requested = render(page.as_uri(), tmp_path)
    assert requested == []
    assert "widget-hslider" in dom, "the slider was not rendered: is book/_static/jupyter-widgets/embed.js there?"
    shown = rendered_html(dom)
    assert shown == ["<b>frame 2</b>"], shown   # the link ran in the browser and selected the slider's frame


def widget_pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        return []
    return sorted(p for p in HTML.rglob("*.html") if STATE in p.read_text(errors="ignore"))


if not (HTML / "index.html").exists() and os.environ.get("IMALIB_REQUIRE_BOOK"):
    raise RuntimeError(f"{HTML} has no built book: run `make test` (it builds the book before this check)")


@pytest.mark.parametrize("page", widget_pages(), ids=lambda p: str(p.relative_to(HTML)))
def test_book_page_loads_the_local_widget_manager_only(page):
    text = page.read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', text)
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    local = [s for s in scripts if "jupyter-widgets/embed.js" in s]
    assert len(local) == 1, scripts
    assert (page.parent / local[0].split("?")[0]).resolve().is_file()
    assert text.count(f'type="{VIEW}"') >= 1


@needs_browser
@pytest.mark.parametrize("page", widget_pages(), ids=lambda p: str(p.relative_to(HTML)))
def test_book_page_renders_its_widgets_offline(page, tmp_path):
    views = page.read_text().count(f'<script type="{VIEW}">')
    dom, requested = render(page.as_uri(), tmp_path)
    assert requested == [], requested
    rendered = dom.count("widget-subarea")
    assert rendered >= views, f"{rendered} of {views} widget views rendered"
    images = re.findall(r'<img class="[^"]*widget-image[^"]*" src="([^"]{0,16})', dom)
    assert images and all(src.startswith(("blob:", "data:")) for src in images), images


def test_papermill_stores_the_widget_state_the_pages_embed(tmp_path):
    """imalib.notebooks runs the chapters with papermill; its client (nbclient, store_widget_state on by
    default) must save every widget model, links included, in the executed notebook's metadata."""
    import nbformat
    import papermill

    source = tmp_path / "widgets.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(
        "import ipywidgets as w\n"
        "stack = w.Stack(children=[w.HTML('frame 0'), w.HTML('frame 1')], selected_index=0)\n"
        "slider = w.SelectionSlider(options=[0.1, 0.2], index=0)\n"
        "w.jslink((slider, 'index'), (stack, 'selected_index'))\n"
        "w.VBox([slider, stack])")]
    nbformat.write(notebook, source)
    target = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(source), str(target), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    executed = nbformat.read(target, as_version=4)
    state = executed.metadata["widgets"][STATE]["state"]
    names = sorted(model["model_name"] for model in state.values())
    for name in ("LinkModel", "StackModel", "SelectionSliderModel", "VBoxModel"):
        assert name in names, names
    assert sum(name == "HTMLModel" for name in names) == 2
    views = [o for o in executed.cells[0].outputs if VIEW in o.get("data", {})]
    assert len(views) == 1 and views[0]["data"][VIEW]["model_id"] in state
