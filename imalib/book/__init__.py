"""Helpers that put computed values into the book's text (MyST-NB glue)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def glue_text(name: str, value: Any, fmt: str = "") -> None:
    """Glue ``value`` (formatted with ``fmt``) as Markdown; cite it with {glue:md}`name` in the text."""
    from IPython.display import Markdown
    from myst_nb import glue

    text = format(value, fmt) if fmt else str(value)
    glue(name, Markdown(text), display=False)


def glue_table(name: str, frame: pd.DataFrame, *, index_name: str = "") -> None:
    """Glue a DataFrame as a Markdown table; cite it with {glue:md}`name`."""
    from IPython.display import Markdown
    from myst_nb import glue

    table = frame.copy()
    table.columns = [format_eps(c) for c in table.columns]
    table.index.name = index_name or table.index.name
    glue(name, Markdown(table.to_markdown()), display=False)


def glue_figure(name: str, figure: Any) -> None:
    """Glue a matplotlib figure (and close it); show it with a {glue:figure} directive."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, figure, display=False)
    plt.close(figure)


def format_eps(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
