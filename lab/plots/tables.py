"""Rows -> an HTML table: the one helper of the app's tables and the HTML report's."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import yaml


def cell_text(value: Any, missing: str = "–") -> str:
    """A cell as plain text: floats to 4 significant digits, mappings and lists as one line of
    YAML, ``missing`` for None."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=80).strip()
    return str(value)


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    missing: str = "–",
    empty: str | None = None,
) -> str:
    """A ``<table class="lab-table">`` with one header row; every cell escaped. With ``empty``
    given, no rows give that word instead of a table."""
    if not rows and empty is not None:
        return f"<p class='none'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(c, missing))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f'<table class="lab-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def dict_rows(rows: Sequence[dict], columns: Sequence[str]) -> list[list[Any]]:
    """Mappings -> rows of cells in ``columns`` order (a missing key is None)."""
    return [[r.get(c) for c in columns] for r in rows]
