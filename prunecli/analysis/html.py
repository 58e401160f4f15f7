"""A self-contained HTML page: headings, paragraphs, tables and images, no scripts.

Images are embedded as ``data:image/png;base64,...`` URIs (the PNG files are still written
beside the page, for the Markdown report), so the page is one self-contained file: it opens
from disk in any browser, no server, and can be mailed or attached to a CI run alone.
Everything that comes from a model or a config is escaped.

>>> "<table>" in page("t", [table(["a"], [[1]])])
True
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #eee}"
)


def page(title: str, blocks: Sequence[str]) -> str:
    """The whole document around ``blocks`` (each from ``heading``, ``paragraph``,
    ``table`` or ``image``)."""
    body = "\n".join(blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="generator" content="prunecli">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def heading(text: str) -> str:
    return f"<h2>{html.escape(text)}</h2>"


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(png: bytes, caption: str) -> str:
    """A PNG embedded in the page as a data URI (no file needed to show it).

    >>> image(b"x", "c").startswith('<figure><img src="data:image/png;base64,eA=="')
    True
    """
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="{source}" alt="{html.escape(caption, quote=True)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
