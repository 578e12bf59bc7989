"""Write a notebook from a list of (kind, source) cells: `python tools/nb.py` is not needed by users;
the lead uses `cells_to_notebook` to keep notebook sources readable in review."""

from __future__ import annotations

import nbformat


def notebook(cells: list[tuple[str, str]], path: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            tags = []
            if kind == "params":
                tags.append("parameters")
            if kind in ("params", "hide"):
                tags.append("hide-input")
            if tags:
                cell.metadata["tags"] = tags
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i:02d}"
    nbformat.write(nb, path)
