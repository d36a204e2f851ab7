"""Self-contained HTML pages of the diagnostics: the performance report, a task stream, a
flame graph.

One file each, opening offline: the data sits in the page as JSON, and a small script of
ours (``page.js`` beside this module, inlined) draws every plot as SVG -- no CDN, no
third-party code. The script draws whatever sections the data has, so one template serves
the report (every section), ``client.get_task_stream(plot=True)`` (the stream only) and
``client.profile(filename=...)`` (the flame graph only).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["render", "write_page", "write_profile", "write_task_stream"]

_HERE = Path(__file__).parent
#: Sections in page order: data key -> heading.
SECTIONS = {
    "task_stream": "Task stream",
    "groups": "Task groups",
    "spans": "Spans",
    "transfers": "Transfers",
    "memory": "Worker memory",
    "cpu": "Worker CPU",
    "profile": "Profile",
    "events": "Cluster events",
}


def _jsonable(value: Any) -> Any:
    """JSON without NaN/Infinity (which a browser's JSON.parse refuses)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def render(title: str, data: dict[str, Any]) -> str:
    """The page: ``data`` holds the sections of :data:`SECTIONS` it has, plus ``summary``
    (a map of figures shown at the top)."""
    payload = json.dumps(_jsonable(data), separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never ends the script element early
    sections = "\n".join(
        f'<section id="{key}"><h2>{html.escape(heading)}</h2><div class="plot"></div></section>'
        for key, heading in SECTIONS.items()
        if data.get(key)
    )
    return _TEMPLATE.format(
        title=html.escape(title),
        style=(_HERE / "page.css").read_text(),
        script=(_HERE / "page.js").read_text(),
        sections=sections,
        data=payload,
    )


def write_page(path: str | Path, title: str, data: dict[str, Any]) -> Path:
    target = Path(path)
    target.write_text(render(title, data), encoding="utf-8")
    return target


def write_profile(path: str | Path, state: dict[str, Any], title: str = "rdist profile") -> None:
    """``client.profile(filename=...)``: the flame graph of a dask profile dict."""
    write_page(path, title, {"profile": state, "summary": {"samples": state.get("count", 0)}})


def write_task_stream(path: str | Path, records: list[dict[str, Any]]) -> None:
    """``client.get_task_stream(plot=True)``: the task stream of dask-shaped records."""
    write_page(path, "rdist task stream", {"task_stream": records, "summary": {}})


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><dl id="summary"></dl></header>
<main>
{sections}
</main>
<div id="tip" hidden></div>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""
