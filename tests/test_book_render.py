"""The built book, rendered in headless Chromium: math typeset offline, Moons table and figure present.

Needs `_build/html` (built by `make test` before this file runs). Run on its own, without a build, it skips;
`make test` sets IMALIB_REQUIRE_BOOK=1, and then a missing build is a failure.

Needs a Chromium (Debian's `chromium`, `chromium-browser`, Google Chrome, or the program named by
$IMALIB_CHROMIUM). Without one the two browser checks skip with a loud reason, except in CI (CI=true, set by
`.ci/run` and by GitHub Actions), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parent.parent / "_build" / "html"
PAGES = [
    "book/intro.html",
    "book/generated/method.html",
    "book/generated/equilibrium.html",
    "book/generated/moons.html",
    "book/generated/fashion_mnist.html",
    "book/generated/svhn.html",
    "book/generated/covid.html",
    "book/generated/reproducing.html",
]

if not (HTML / "index.html").exists():
    if os.environ.get("IMALIB_REQUIRE_BOOK"):
        raise RuntimeError(f"{HTML} has no built book: run `make test` (it builds the book before this check)")
    pytest.skip("the book is not built; `make test` builds it first", allow_module_level=True)


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = (
    "NO CHROMIUM: the browser check of the book did not run. Enable it with `apt-get install chromium` "
    "(Debian/Ubuntu, as root; `make test` does this itself when run as root) or set IMALIB_CHROMIUM to a "
    "Chromium or Chrome binary"
)


def find_browser() -> str | None:
    """The Chromium to use: $IMALIB_CHROMIUM if set, else the first of BROWSERS on the PATH."""
    named = os.environ.get("IMALIB_CHROMIUM")
    if named:
        found = shutil.which(named)
        if not found:
            raise RuntimeError(f"IMALIB_CHROMIUM={named!r} is not an executable: point it at a Chromium binary")
        return found
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def browser_or_skip() -> str:
    """The browser; without one a loud skip here, a failure in CI."""
    browser = find_browser()
    if browser is None:
        if in_ci():
            pytest.fail(f"{NO_BROWSER}. CI must run this check.")
        pytest.skip(NO_BROWSER)
    return browser


def render(page: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (MathJax included), from headless Chromium, offline."""
    browser = browser_or_skip()
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        (HTML / page).as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page", PAGES)
def test_page_exists_and_loads_nothing_from_the_web(page):
    html = (HTML / page).read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert scripts, "a page without scripts is not a Sphinx page"
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts


def test_without_a_browser_the_check_skips_loudly_except_in_ci(monkeypatch):
    monkeypatch.delenv("IMALIB_CHROMIUM", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="NO CHROMIUM.*apt-get install chromium"):
        browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this check"):
        browser_or_skip()


def test_a_named_browser_must_exist(monkeypatch):
    monkeypatch.setenv("IMALIB_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(RuntimeError, match="IMALIB_CHROMIUM="):
        find_browser()


def test_math_is_typeset_offline(tmp_path):
    dom = render("book/generated/equilibrium.html", tmp_path)
    assert dom.count("<mjx-container") >= 5, "MathJax did not typeset the equations (offline MathJax missing?)"


def test_moons_table_and_figures_are_there(tmp_path):
    dom = render("book/generated/moons.html", tmp_path)
    assert "mjx-container" in dom
    for label in ("ima", "mma", "trades", "adv0.3", "ce"):
        assert f">{label}<" in dom, f"row {label} missing from the Moons tables"
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', dom)
    assert len(images) >= 3, images  # the accuracy curves, the decision boundaries, the PGD - exact gap
    for source in images:
        assert (HTML / "book" / "generated" / source).resolve().exists() or (HTML / source.lstrip("/")).exists()
    assert "Not reproduced" not in dom
