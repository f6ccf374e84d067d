"""Figures without a display: :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot,
no global backend change), rendered to PNG bytes for the report."""

from __future__ import annotations

import io

__all__ = ["new_figure", "png_bytes", "log_axis"]


def new_figure(width: float, height: float):
    """A constrained-layout Figure attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig, dpi: int = 90, palette: bool = True) -> bytes:
    """The figure as PNG bytes; with ``palette`` reduced to 256 colours (about 3x smaller files,
    no visible change for line and scatter plots)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if not palette:
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def log_axis(ax, axis: str = "y") -> None:
    """Logarithmic axis with plain tick labels (0.1, 1, 10 rather than 10^-1...)."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_formatter(plain)
    target.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
