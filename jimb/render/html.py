"""A tiny HTML page builder: one file that opens anywhere, offline, with nothing to fetch.

Pages are plain strings; images are embedded as base64 data: URIs and styles are inline, so the
page holds no script and no network reference (it can be mailed or archived as is).
"""

from __future__ import annotations

import base64
import html

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; max-width: 40em; }
p.note { color: #555; }
summary { cursor: pointer; color: #225; margin: 0.4em 0; }
"""


def escape(text) -> str:
  """Text as HTML (quotes included, so it is safe inside attributes too)."""
  return html.escape(str(text), quote=True)


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4f}"
  return escape("" if value is None else value)


def table(header: list[str], rows: list[list], caption: str = "") -> str:
  """A table (no header row when `header` is empty); floats are shown with 4 decimals, None as
  an empty cell."""
  head = "".join(f"<th>{escape(h)}</th>" for h in header)
  head = f"<thead><tr>{head}</tr></thead>" if head else ""
  body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>\n"
                 for row in rows)
  cap = f"<caption>{escape(caption)}</caption>" if caption else ""
  return f"<table>{cap}{head}<tbody>\n{body}</tbody></table>\n"


def figure(png: bytes, caption: str, alt: str) -> str:
  """A PNG embedded as a data: URI, with its caption."""
  data = base64.b64encode(png).decode("ascii")
  return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
          f"<figcaption>{escape(caption)}</figcaption></figure>\n")


def paragraph(text: str) -> str:
  return f'<p class="note">{escape(text)}</p>\n'


def folded(summary: str, *parts: str) -> str:
  """Parts shown only when the reader opens them (a plain <details>, no script)."""
  return f"<details><summary>{escape(summary)}</summary>\n{''.join(parts)}</details>\n"


def section(title: str, *parts: str) -> str:
  """A titled section of already-built parts."""
  return f"<section><h2>{escape(title)}</h2>\n{''.join(parts)}</section>\n"


def document(title: str, sections: list[str]) -> str:
  """The whole page: inline CSS, no JavaScript, no network references."""
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
          f"<body><h1>{escape(title)}</h1>\n{''.join(sections)}</body></html>\n")
