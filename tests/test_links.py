"""Offline check of every link, anchor and image in the built book (`_build/html`).

Every internal `href`/`src` must name a file of the build, every `#anchor` an `id` (or `<a name>`) of its target
page, and every script, stylesheet, image, icon or frame must load from the build itself, never from the web.
Links to other sites are listed (in `_build/external-links.txt`) but not fetched: the check runs offline.

The checker is tested on small hand-made trees first; the built book is checked when it exists (`make test`
builds it first and sets IMALIB_REQUIRE_BOOK=1, which turns a missing build into a failure).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from bs4 import BeautifulSoup

HTML = Path(__file__).resolve().parent.parent / "_build" / "html"
EXTERNAL_LIST = HTML.parent / "external-links.txt"

# (tag, attribute, is a resource the page loads). Links (<a>) are navigated to, resources are fetched by the page.
ATTRIBUTES = (
    ("a", "href", False),
    ("link", "href", True),
    ("script", "src", True),
    ("img", "src", True),
    ("source", "src", True),
    ("iframe", "src", True),
    ("video", "src", True),
    ("audio", "src", True),
    ("video", "poster", True),
    ("embed", "src", True),
    ("object", "data", True),
)
NOT_CHECKED_SCHEMES = ("mailto", "tel", "javascript", "data")
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)""")
# <link rel=...> values that are relations, not resources the browser loads
NON_RESOURCE_RELS = {"canonical", "alternate", "search", "index", "next", "prev", "author", "license", "help"}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    external: set[str] = field(default_factory=set)
    checked: int = 0


def page_ids(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    """The ids (and `<a name>` values) a page defines, parsed once."""
    if path not in cache:
        soup = BeautifulSoup(path.read_text(encoding="utf-8", errors="replace"), "html.parser")
        ids = {str(tag["id"]) for tag in soup.find_all(id=True)}
        ids |= {str(tag["name"]) for tag in soup.find_all("a", attrs={"name": True})}
        cache[path] = ids
    return cache[path]


def resolve(root: Path, page: Path, url: str) -> tuple[Path | None, str]:
    """(target file or None when outside the build, fragment) of an internal `url` found on `page`."""
    parts = urlsplit(url)
    fragment = unquote(parts.fragment)
    if not parts.path:
        return page, fragment
    base = root if parts.path.startswith("/") else page.parent
    target = (base / unquote(parts.path).lstrip("/")).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(root.resolve()):
        return None, fragment
    return target, fragment


def check_url(
    root: Path, page: Path, url: str, *, resource: bool, where: str, report: Report, ids: dict[Path, set[str]]
) -> None:
    url = url.strip()
    if not url:
        report.problems.append(f"{where}: empty link")
        return
    parts = urlsplit(url)
    report.checked += 1
    if parts.scheme in NOT_CHECKED_SCHEMES:
        return
    if parts.scheme or url.startswith("//"):
        if resource:
            report.problems.append(f"{where}: loads {url} from the web (the pages must work offline)")
        elif parts.scheme in ("http", "https"):
            report.external.add(url)
        elif parts.scheme == "file":
            report.problems.append(f"{where}: {url} points at this machine's file system")
        return
    target, fragment = resolve(root, page, url)
    if target is None:
        report.problems.append(f"{where}: {url} points outside the build")
    elif not target.is_file():
        report.problems.append(f"{where}: {url} names {target.relative_to(root.resolve())}, which does not exist")
    elif fragment and target.suffix == ".html" and fragment not in page_ids(target, ids):
        report.problems.append(f"{where}: {url}: no id {fragment!r} in {target.relative_to(root.resolve())}")


def check_tree(root: Path) -> Report:
    """Check every HTML page and stylesheet under `root`; returns the problems and the external links found."""
    root = root.resolve()
    report = Report()
    ids: dict[Path, set[str]] = {}
    for page in sorted(root.rglob("*.html")):
        name = page.relative_to(root)
        if name.parts[0] == "_static":  # the theme's Jinja partials, copied as assets; no page links to them
            continue
        soup = BeautifulSoup(page.read_text(encoding="utf-8", errors="replace"), "html.parser")
        for tag_name, attribute, resource in ATTRIBUTES:
            for tag in soup.find_all(tag_name, attrs={attribute: True}):
                is_resource = resource
                if tag_name == "link":
                    rels = set(tag.get("rel") or [])
                    is_resource = not rels or not rels <= NON_RESOURCE_RELS
                check_url(
                    root,
                    page,
                    str(tag[attribute]),
                    resource=is_resource,
                    where=f"{name} <{tag_name}>",
                    report=report,
                    ids=ids,
                )
        for tag in soup.find_all(["img", "source"], attrs={"srcset": True}):
            for candidate in str(tag["srcset"]).split(","):
                if candidate.strip():
                    check_url(
                        root,
                        page,
                        candidate.split()[0],
                        resource=True,
                        where=f"{name} <{tag.name} srcset>",
                        report=report,
                        ids=ids,
                    )
        for tag in soup.find_all(style=True):
            for url in CSS_URL.findall(str(tag["style"])):
                check_url(root, page, url, resource=True, where=f"{name} style", report=report, ids=ids)
    for sheet in sorted(root.rglob("*.css")):
        name = sheet.relative_to(root)
        text = re.sub(r"/\*.*?\*/", "", sheet.read_text(encoding="utf-8", errors="replace"), flags=re.S)
        for url in CSS_URL.findall(text):
            if not url.startswith("#"):  # url(#id) names an SVG element, not a file
                check_url(root, sheet, url, resource=True, where=f"{name} url()", report=report, ids=ids)
    return report


# ---- the checker on hand-made trees: it must catch each kind of fault -------------------------------------------

GOOD_PAGE = """<html><head><link rel="stylesheet" href="_static/style.css"><script src="_static/app.js"></script>
<link rel="canonical" href="https://example.org/book/"></head>
<body><h1 id="top">Top</h1><a name="old-anchor"></a>
<a href="#top">self</a> <a href="sub/page.html#part">sub</a> <a href="sub/">folder</a> <a href="#">nowhere</a>
<a href="index.html#old-anchor">named</a> <a href="https://example.org/paper">paper</a>
<a href="mailto:someone@example.org">mail</a> <img src="_images/figure.png"> <img src="data:image/png;base64,AAAA">
<img srcset="_images/figure.png 1x, _images/figure.png 2x" src="_images/figure.png">
</body></html>"""


def write_tree(
    root: Path,
    index: str = GOOD_PAGE,
    sub: str = '<p id="part">x</p><a href="../index.html#top">up</a>',
    css: str = "body { background: url('../_images/figure.png'); }",
) -> Path:
    for folder in ("_static", "_images", "sub"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(index)
    (root / "sub" / "page.html").write_text(sub)
    (root / "sub" / "index.html").write_text("<p>folder index</p>")
    (root / "_static" / "style.css").write_text(css)
    (root / "_static" / "app.js").write_text("")
    (root / "_images" / "figure.png").write_bytes(b"\x89PNG")
    return root


def test_a_sound_tree_passes_and_external_links_are_listed(tmp_path):
    report = check_tree(write_tree(tmp_path))
    assert report.problems == []
    assert report.external == {"https://example.org/paper", "https://example.org/book/"}  # canonical: a relation
    assert report.checked >= 14


def test_theme_templates_under_static_are_not_pages(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "_static" / "macros.html").write_text("<script src=\"{{ pathto('x.js', 1) }}\"></script>")
    assert check_tree(tmp_path).problems == []


@pytest.mark.parametrize(
    ("index", "sub", "css", "expected"),
    [
        (GOOD_PAGE.replace("sub/page.html#part", "sub/missing.html"), None, None, "sub/missing.html, which does not"),
        (GOOD_PAGE.replace("sub/page.html#part", "sub/page.html#gone"), None, None, "no id 'gone' in sub/page.html"),
        (GOOD_PAGE.replace('href="#top"', 'href="#nope"'), None, None, "no id 'nope' in index.html"),
        (
            GOOD_PAGE.replace('<img src="_images/figure.png">', '<img src="_images/lost.png">'),
            None,
            None,
            "_images/lost.png, which does not exist",
        ),
        (GOOD_PAGE.replace("_images/figure.png 2x", "_images/big.png 2x"), None, None, "_images/big.png"),
        (
            GOOD_PAGE.replace("_static/app.js", "https://cdn.example.org/app.js"),
            None,
            None,
            "loads https://cdn.example.org/app.js from the web",
        ),
        (GOOD_PAGE.replace("_static/style.css", "//cdn.example.org/style.css"), None, None, "from the web"),
        (
            GOOD_PAGE.replace('<img src="_images/figure.png">', '<img src="http://example.org/x.png">'),
            None,
            None,
            "from the web",
        ),
        (GOOD_PAGE.replace('href="sub/"', 'href="../../etc/passwd"'), None, None, "points outside the build"),
        (GOOD_PAGE.replace('href="sub/"', 'href="file:///home/me/book/x.html"'), None, None, "file system"),
        (None, '<p id="part"></p><a href="../index.html#missing-up">up</a>', None, "no id 'missing-up' in index.html"),
        (None, None, "@font-face { src: url(fonts/absent.woff2); }", "_static/fonts/absent.woff2, which does not"),
        (None, None, "@import url('https://fonts.example.org/x.css');", "from the web"),
    ],
)
def test_each_kind_of_fault_is_caught(tmp_path, index, sub, css, expected):
    arguments = {key: value for key, value in (("index", index), ("sub", sub), ("css", css)) if value is not None}
    report = check_tree(write_tree(tmp_path, **arguments))
    assert len(report.problems) == 1, report.problems
    assert expected in report.problems[0]


def test_a_fragment_to_a_non_html_file_needs_only_the_file(tmp_path):
    report = check_tree(write_tree(tmp_path, index='<a href="_images/figure.png#page=2">x</a>', sub="<p>no links</p>"))
    assert report.problems == []


# ---- the built book ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> Path:
    if not (HTML / "index.html").exists():
        if os.environ.get("IMALIB_REQUIRE_BOOK"):
            pytest.fail(f"{HTML} has no built book: run `make test` (it builds the book before this check)")
        pytest.skip("the book is not built; `make test` builds it first (or `make html`)")
    return HTML


def test_every_link_anchor_and_image_of_the_book_resolves_offline(built):
    report = check_tree(built)
    EXTERNAL_LIST.write_text("".join(f"{url}\n" for url in sorted(report.external)))
    assert not report.problems, f"{len(report.problems)} broken link(s):\n" + "\n".join(report.problems[:50])
    pages = list(built.rglob("*.html"))
    assert len(pages) >= 8 and report.checked > 20 * len(pages), (len(pages), report.checked)
    assert list((built / "_images").glob("*.png")), "the book has no figures: were the notebooks rendered?"
