"""A self-contained HTML page: text, tables and PNG figures written beside ``index.html``.

The page needs no network access (inline CSS, no script, images by relative path). All
files of a report are written together with :func:`pkpd.io.atomic_paths`: an interrupt
or a failure leaves an existing report as it was.
"""

from __future__ import annotations

import html as _html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Page", "esc", "table_html", "fmt_number"]

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 1.5em auto;
       max-width: 1250px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #446; } h2 { font-size: 1.3em; margin-top: 1.8em;
border-bottom: 1px solid #aab; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.86em; }
th, td { border: 1px solid #ccd; padding: 3px 7px; text-align: right; }
th { background: #eef; } td.text, th.text { text-align: left; }
tr.problem td { background: #fde2e0; } td.bad { color: #a00; font-weight: 600; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } .warn { color: #a00; } nav a { margin-right: 1em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 0.9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
"""


def esc(x) -> str:
    """HTML-escaped text."""
    return _html.escape(str(x), quote=True)


def fmt_number(v, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant figures, '' for NaN/None."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return ""
        return f"{float(v):.{digits}g}"
    return str(v)


def table_html(df: pd.DataFrame, *, index: bool = True, problem_column: str | None = None, table_id: str = "",
               digits: int = 4, bad_cells=None) -> str:
    """A DataFrame as an HTML table.

    Rows whose ``problem_column`` is non-empty get the class ``problem`` (highlighted);
    ``bad_cells`` is a set of ``(row_label, column)`` shown in red.
    """
    bad_cells = bad_cells or set()
    cols = list(df.columns)
    head = ([f'<th class="text">{esc(df.index.name or "")}</th>'] if index else [])
    head += [f'<th class="{"text" if df[c].dtype == object else ""}">{esc(c)}</th>' for c in cols]
    rows = []
    for label, r in df.iterrows():
        cls = ' class="problem"' if problem_column and str(r.get(problem_column, "") or "") else ""
        cells = [f'<td class="text">{esc(label)}</td>'] if index else []
        for c in cols:
            v = r[c]
            klass = "text" if isinstance(v, str) else ""
            if (label, c) in bad_cells:
                klass += " bad"
            cells.append(f'<td class="{klass.strip()}">{esc(fmt_number(v, digits))}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    tid = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{tid}><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


class Page:
    """An HTML page under construction, with its images.

    Attributes
    ----------
    images : dict
        ``{file name: PNG bytes}``, written beside ``index.html``.
    """

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []
        self.images: dict[str, bytes] = {}

    def section(self, title: str, level: int = 2) -> None:
        anchor = _slug(title)
        if level == 2:
            self.sections.append((anchor, title))
        self.parts.append(f'<h{level} id="{anchor}">{esc(title)}</h{level}>')

    def text(self, text: str, cls: str = "") -> None:
        klass = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{klass}>{esc(text)}</p>")

    def raw(self, html_text: str) -> None:
        self.parts.append(html_text)

    def meta(self, items) -> None:
        """A definition list of ``(key, value)`` pairs."""
        body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
        self.parts.append(f'<dl class="meta">{body}</dl>')

    def table(self, df: pd.DataFrame, **options) -> None:
        self.parts.append(table_html(df, **options))

    def figure(self, name: str, fig_or_png, alt: str, dpi: int = 90) -> str:
        """Add a figure (a matplotlib Figure or PNG bytes) as ``<name>.png``; returns the file name."""
        from .figures import png_bytes

        data = fig_or_png if isinstance(fig_or_png, (bytes, bytearray)) else png_bytes(fig_or_png, dpi=dpi)
        base = _slug(name)
        file = f"{base}.png"
        k = 2
        while file in self.images:
            file = f"{base}-{k}.png"
            k += 1
        self.images[file] = bytes(data)
        self.parts.append(f'<img src="{esc(file)}" alt="{esc(alt)}">')
        return file

    def render(self) -> str:
        nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{esc(self.title)}</h1><nav>{nav}</nav>\n" + "\n".join(self.parts) + "\n</body></html>\n")

    def write(self, out_dir, *, overwrite: bool = True) -> Path:
        """Write ``index.html`` and the images into ``out_dir`` (created), all files together."""
        from ..io import atomic_paths

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = list(self.images)
        paths = [out / n for n in names] + [out / "index.html"]
        with atomic_paths(paths, [".png"] * len(names) + [".html"], overwrite=overwrite) as tmps:
            for n, tmp in zip(names, tmps):
                Path(tmp).write_bytes(self.images[n])
            Path(tmps[-1]).write_text(self.render(), encoding="utf-8")
        return out / "index.html"
