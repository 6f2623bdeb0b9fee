"""Self-contained HTML reports: headings, paragraphs, tables, code blocks and plotly figures in one page
that opens offline (plotly.js is embedded once)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
pre{background:#f7f7f7;padding:.7em;white-space:pre-wrap;font-size:.9em}
.ok{color:#1a7f37}.bad{color:#c62828}.muted{color:#777}
"""


class HtmlReport:
    """Build a report section by section, then ``save(path)``.

    >>> r = HtmlReport("Demo")
    >>> r.table([["fictional", 0.99]], header=["kind", "accuracy"])
    >>> "<table>" in r.to_html()
    True
    """

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self.n_figures = 0

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, *, raw_html: bool = False) -> None:
        self._parts.append(f"<p>{text if raw_html else html.escape(text)}</p>")

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, rows: list[list[Any]], header: list[str], *, digits: int = 3) -> None:
        def cell(v: Any, tag: str) -> str:
            if isinstance(v, float):
                return f"<{tag}>{v:.{digits}f}</{tag}>"
            if v is None:
                return f"<{tag} class='muted'>–</{tag}>"
            return f"<{tag} class='l'>{html.escape(str(v))}</{tag}>"

        head = "".join(cell(h, "th") for h in header)
        body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
        self._parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figure(self, fig) -> None:
        """Embed a ``plotly.graph_objects.Figure`` (in a ``div.rl-figure``; the page's ``reasonlens:figures`` meta
        tag counts them, so a browser test can check that each one rendered)."""
        self._parts.append(f"<div class='rl-figure'>{fig.to_html(full_html=False, include_plotlyjs=False)}</div>")
        self.n_figures += 1

    def to_html(self) -> str:
        script = ""
        if self.n_figures:
            from plotly.offline import get_plotlyjs

            script = f"<script>{get_plotlyjs()}</script>"
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<meta name='reasonlens:figures' content='{self.n_figures}'><style>{_STYLE}</style>{script}</head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self._parts) + "</body></html>")

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` atomically (a temporary sibling renamed over it): an interrupted save leaves
        the previous file, or none, never half a page."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_text(self.to_html(), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
