"""Draw the report's figures (:mod:`more.report.charts`) as PNG with matplotlib's object API (no pyplot, no global
backend switch).

Bar charts are small multiples with a shared y axis: a panel per protocol or metric, a bar per row in the same colour
in every panel, its mean written above it, the spread over seeds as an error bar and each seed as a dot; the paper's
value is a black line across the bar it belongs to, the authors' run a hatched bar, and a cell without a number
keeps its place with the table's word for why. Heat maps write each cell's value in it.
"""

from __future__ import annotations

import io
import math
import textwrap

from more.report.charts import BarChart, HeatMap

_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
           "#eeca3b"]
_AUTHORS = "#dddddd"


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # type: ignore[attr-defined]
    return buf.getvalue()


def _new_figure(width: float, height: float) -> object:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _tick(label: str) -> str:
    """A bar's label on short lines (a ``\\n`` in it starts a new line; words are never cut)."""
    return "\n".join(line for part in label.split("\n") for line in textwrap.wrap(part, 14, break_long_words=False))


def bar_png(chart: BarChart) -> bytes:
    """The PNG bytes of a bar chart (see the module docstring for what it shows)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = chart.panels
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    most = max(len(p.bars) for p in panels)
    width = max(3.4, 0.62 * most + 1.4)
    fig = _new_figure(width * ncols + 0.6, 3.5 * nrows + 1.3)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    keys = list(dict.fromkeys(b.color_key or b.label for p in panels for b in p.bars if not b.authors))
    color = {key: _COLORS[i % len(_COLORS)] for i, key in enumerate(keys)}
    tops = [v for p in panels for b in p.bars for v in [*b.values, *([b.paper] if b.paper is not None else [])]]
    ymax = max([*tops, 1.0]) * 1.18
    seen = set()
    for idx, panel in enumerate(panels):
        ax = axes[idx // ncols][idx % ncols]
        for x, bar in enumerate(panel.bars):
            stat = bar.stat
            if stat.mean is None:
                ax.text(x, ymax * 0.02, bar.status or "missing", rotation=90, ha="center", va="bottom",
                        fontsize=8, color="#666666")
                seen.add("status")
                continue
            face = _AUTHORS if bar.authors else color[bar.color_key or bar.label]
            ax.bar(x, stat.mean, width=0.7, color=face, edgecolor="#333333" if bar.authors else face,
                   hatch="//" if bar.authors else None, zorder=2)
            if stat.std is not None:
                ax.errorbar(x, stat.mean, yerr=stat.std, color="#222222", capsize=4, linewidth=1.2, zorder=3)
                seen.add("std")
            if not bar.authors:
                offsets = [(i - (len(bar.values) - 1) / 2) * min(0.1, 0.5 / len(bar.values))
                           for i in range(len(bar.values))]
                ax.scatter([x + o for o in offsets], bar.values, s=14, color="black", zorder=4)
                seen.add("seed")
            # inside the bar, at its foot: clear of the error bar, the seed dots and the paper line
            ax.text(x, ymax * 0.02, f"{stat.mean:.1f}", ha="center", va="bottom", fontsize=8.5, zorder=5,
                    color="black" if bar.authors else "white", fontweight="bold",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": _AUTHORS, "edgecolor": "none"}
                    if bar.authors else None)
            seen.add("authors" if bar.authors else "mean")
        for x, bar in enumerate(panel.bars):
            if bar.paper is not None:
                ax.plot([x - 0.42, x + 0.42], [bar.paper, bar.paper], color="black", linewidth=2.2, zorder=6)
                ax.text(x, bar.paper + ymax * 0.012, f"paper {bar.paper:.1f}", ha="center", va="bottom", fontsize=7,
                        zorder=7, bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                                        "alpha": 0.8})
                seen.add("paper")
        ax.set_xticks(range(len(panel.bars)), [_tick(b.label) for b in panel.bars], fontsize=8)
        ax.set_xlim(-0.6, len(panel.bars) - 0.4)
        ax.set_title("\n".join(textwrap.wrap(panel.title, 44)), fontsize=8.5)
        ax.grid(axis="y", alpha=0.3, zorder=0)
    for idx in range(len(panels), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    for row in axes:
        row[0].set_ylabel(chart.ylabel)
    axes[0][0].set_ylim(0, ymax)
    handles = []
    if "mean" in seen:
        handles.append(Patch(color=_COLORS[0], label="mean over seeds" + (" ± std" if "std" in seen else "")))
    if "seed" in seen:
        handles.append(Line2D([], [], marker="o", linestyle="", color="black", markersize=4, label="one seed"))
    if "paper" in seen:
        handles.append(Line2D([], [], color="black", linewidth=2.2, label="paper"))
    if "authors" in seen:
        handles.append(Patch(facecolor=_AUTHORS, edgecolor="#333333", hatch="//", label="authors' run (one run)"))
    fig.suptitle(chart.title, fontsize=11)
    bottom = 0.0
    if chart.note:
        fig.text(0.01, 0.005, chart.note, fontsize=7.5, color="#444444", ha="left", va="bottom")
        bottom = (0.07 + 0.16 * (chart.note.count("\n") + 1)) / fig.get_figheight()
    if handles:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, bottom), fontsize=8,
                   ncols=len(handles), frameon=False)
        bottom += 0.3 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / fig.get_figheight()))
    return _png(fig)


def heatmap_png(heat: HeatMap) -> bytes:
    """The PNG bytes of a heat map: rows top to bottom, each cell's value written in it (``–`` where none)."""
    import numpy as np

    data = np.array([[math.nan if v is None else v for v in row] for row in heat.values], dtype=float)
    fig = _new_figure(max(4.0, 1.15 * len(heat.columns) + 2.6), 0.3 * len(heat.rows) + 1.9)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    for i, row in enumerate(heat.values):
        for j, value in enumerate(row):
            text = "–" if value is None else f"{value:.1f}"
            dark = value is not None and value < 60
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    ax.set_xticks(range(len(heat.columns)), ["\n".join(textwrap.wrap(c, 16)) for c in heat.columns], fontsize=8)
    ax.set_yticks(range(len(heat.rows)), heat.rows, fontsize=8)
    ax.xaxis.tick_top()
    if heat.rows and heat.rows[-1] == "mean":
        ax.axhline(len(heat.rows) - 1.5, color="white", linewidth=2)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="IoU (%)")
    fig.suptitle(heat.title, fontsize=10)
    if heat.note:
        fig.text(0.01, 0.005, heat.note, fontsize=7.5, color="#444444", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return _png(fig)
