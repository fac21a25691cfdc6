"""The coverage picture of ``mode=status status.plot=coverage.png|coverage.html``: streams x hours.

Each cell is one stream-hour, coloured by its row count (log scale; white = no file), with
a red mark where gap or lost events were recorded and an orange mark for disconnects; hours
whose files are not yet verified in the bucket are drawn pale. A
month of ten streams (720 hours x 20 rows) stays readable at about 2 px per hour.

``.html`` needs nothing beyond the standard library (an inline SVG); ``.png`` uses matplotlib
(``pip install matplotlib``, part of the ``test`` extra).
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from actors.errors import TickarchiveError
from actors.restore.overview import CoverageGrid
from actors.storage.layout import NS

GREENS = ["#e5f5e0", "#c7e9c0", "#a1d99b", "#74c476", "#41ab5d", "#238b45", "#006d2c", "#00441b"]
GAP, DISCONNECT = "#d7191c", "#fd8d3c"


class PlotError(TickarchiveError):
    """The picture cannot be drawn (unknown extension, missing matplotlib, nothing to draw)."""


def _hour(ns: int) -> str:
    return f"{datetime.fromtimestamp(ns / NS, tz=timezone.utc):%Y-%m-%d %H:00}"


def shade(rows: int, top: int) -> str:
    """Colour of a cell with ``rows`` rows when the fullest cell has ``top``."""
    if rows <= 0:
        return "#ffffff"
    level = math.log1p(rows) / math.log1p(max(top, 1))
    return GREENS[min(len(GREENS) - 1, int(level * (len(GREENS) - 1) + 0.5))]


def write_plot(grid: CoverageGrid, path: str | Path, title: str = "tickarchive coverage") -> Path:
    """Draw ``grid`` to ``path`` (``.html`` or ``.png``)."""
    path = Path(path)
    if not grid.streams:
        raise PlotError("status.plot: nothing to draw (no archived stream matches)")
    if path.suffix == ".html":
        path.write_text(_html(grid, title), encoding="utf-8")
    elif path.suffix == ".png":
        _png(grid, path, title)
    else:
        raise PlotError(f"status.plot: {path.name!r} must end in .png or .html")
    return path


def _html(grid: CoverageGrid, title: str) -> str:
    cw, ch, left, top = max(2, min(14, 1400 // max(1, len(grid.hours)))), 14, 330, 40
    width, height = left + cw * len(grid.hours) + 20, top + ch * len(grid.streams) + 70
    peak = int(grid.rows.max()) if grid.rows.size else 0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<text x="4" y="16" font-size="14">{html.escape(title)}: {_hour(grid.hours[0])} '
             f'to {_hour(grid.hours[-1])} UTC</text>']
    for r, stream in enumerate(grid.streams):
        y = top + r * ch
        parts.append(f'<text x="4" y="{y + 11}">{html.escape(stream)}</text>')
        for c, hour in enumerate(grid.hours):
            x, rows = left + c * cw, int(grid.rows[r, c])
            tip = f"{stream} {_hour(hour)}: {rows} rows, {grid.gaps[r, c]} gaps, {grid.disconnects[r, c]} disconnects"
            opacity = "1" if grid.backed_up[r, c] or rows == 0 else "0.45"
            parts.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch - 1}" fill="{shade(rows, peak)}" '
                         f'fill-opacity="{opacity}" stroke="#dddddd" stroke-width="0.2"><title>{html.escape(tip)}'
                         f'</title></rect>')
            for count, colour, dy in ((grid.gaps[r, c], GAP, 2), (grid.disconnects[r, c], DISCONNECT, ch - 5)):
                if count:
                    parts.append(f'<rect x="{x}" y="{y + dy - 1}" width="{cw}" height="3" fill="{colour}" '
                                 f'class="{"gap" if colour == GAP else "disconnect"}"/>')
    legend_y = top + ch * len(grid.streams) + 25
    parts.append(f'<text x="4" y="{legend_y}">colour: rows per hour (log scale, white = no file); faded: not yet '
                 f'verified in the bucket; <tspan fill="{GAP}">red bar: gap/lost events</tspan>; '
                 f'<tspan fill="{DISCONNECT}">orange bar: disconnects</tspan></text>')
    parts.append("</svg>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body>{''.join(parts)}</body></html>")


def _png(grid: CoverageGrid, path: Path, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap, LogNorm
        from matplotlib.patches import Patch
    except ImportError:
        raise PlotError("status.plot: PNG pictures need matplotlib (pip install matplotlib), or use .html") from None
    n_streams, n_hours = grid.rows.shape
    fig, ax = plt.subplots(figsize=(min(40, 4 + n_hours * 0.02 + 4), 1.5 + 0.3 * n_streams), dpi=100)
    cmap = ListedColormap(GREENS)
    norm = LogNorm(vmin=1, vmax=max(2, int(grid.rows.max())))
    for backed, alpha in ((True, 1.0), (False, 0.35)):          # pale: not yet verified in the bucket
        shown = np.ma.masked_where((grid.rows <= 0) | (grid.backed_up != backed), grid.rows.astype(float))
        ax.imshow(shown, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm, alpha=alpha,
                  extent=(0, n_hours, n_streams, 0))
    width = max(1.0, n_hours / 250)                            # marks stay visible on a month
    for marks, colour, y0, height in ((grid.gaps, GAP, 0.0, 0.6), (grid.disconnects, DISCONNECT, 0.4, 0.6)):
        for r, c in np.argwhere(marks > 0):
            ax.add_patch(plt.Rectangle((c + 0.5 - width / 2, r + y0), width, height, color=colour, zorder=3))
    ax.set_yticks(np.arange(n_streams) + 0.5, labels=grid.streams, fontsize=8)
    step = max(1, n_hours // 12)
    ax.set_xticks(np.arange(0, n_hours, step) + 0.5, labels=[_hour(h)[5:] for h in grid.hours[::step]], fontsize=7,
                  rotation=30, ha="right")
    ax.set_xlim(0, n_hours)
    ax.set_title(f"{title}: {_hour(grid.hours[0])} to {_hour(grid.hours[-1])} UTC", fontsize=10)
    ax.legend(handles=[Patch(color=GREENS[-2], label="rows/hour (log), backed up"),
                       Patch(color=GREENS[-2], alpha=0.35, label="not yet backed up"),
                       Patch(facecolor="white", edgecolor="#888888", label="no file"), Patch(color=GAP, label="gap / lost"),
                       Patch(color=DISCONNECT, label="disconnect")], loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
