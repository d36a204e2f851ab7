"""Jupyter views (``_repr_html_``) of the client and the cluster."""

from __future__ import annotations

import html

__all__ = ["html_table"]


def html_table(title: str, rows: list[tuple[str, str]], link: str | None) -> str:
    """A small HTML table for Jupyter's ``_repr_html_`` (every value escaped)."""
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    if link:
        safe = html.escape(link, quote=True)
        cells += (
            "<tr><th style='text-align:left'>Dashboard</th>"
            f"<td><a href='{safe}' target='_blank'>{safe}</a></td></tr>"
        )
    return f"<div><strong>{html.escape(title)}</strong><table>{cells}</table></div>"
