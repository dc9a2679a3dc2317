"""Draw the report's figures (:mod:`more.report.charts`) as PNG with matplotlib's object API (no pyplot, no global
backend switch).

Bar charts are small multiples with a shared y axis: a panel per protocol or metric, a bar per row in the same colour
in every panel, its mean written above it, the spread over seeds as an error bar and each seed as a dot; the paper's
value is a black line across the bar it belongs to, the authors' run a hatched bar, and a cell without a number
keeps its place with the table's word for why. Heat maps write each cell's value in it.

A big grid (hundreds of conditions) gets a dense figure a screen still holds instead of one hundreds of inches wide
that takes a minute to draw: past :data:`DENSE_BARS` bars in a panel the panels are stacked, the bars narrow, the
means stay in the table (no number per bar), and the labels turn upright; past :data:`DENSE_CELLS` cells a heat
map writes no value in them, and past :data:`DENSE_LINES` rows or columns those narrow. The tables next to the
figures always have every number.
"""

from __future__ import annotations

import io
import math
import textwrap

from more.report.charts import BarChart, HeatMap

_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
           "#eeca3b"]
_AUTHORS = "#dddddd"
DENSE_BARS = 40  # bars in a panel past which a bar chart is drawn dense
DENSE_CELLS = 1500  # cells past which a heat map writes no value in them
DENSE_LINES = 40  # rows (columns) past which a heat map's rows (columns) narrow and their labels shrink
MAX_WIDTH_IN = 40.0  # a dense bar chart's widest panel, inches (4,400 pixels)


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
    most = max(len(p.bars) for p in panels)
    dense = most > DENSE_BARS
    ncols = 1 if dense else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = min(MAX_WIDTH_IN, 0.1 * most + 1.4) if dense else max(3.4, 0.62 * most + 1.4)
    label_in = 0.06 * max(len(b.label) for p in panels for b in p.bars) if dense else 0.0  # upright labels
    fig = _new_figure(width * ncols + 0.6, (3.5 + label_in) * nrows + 1.3)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    keys = list(dict.fromkeys(b.color_key or b.label for p in panels for b in p.bars if not b.authors))
    color = {key: _COLORS[i % len(_COLORS)] for i, key in enumerate(keys)}
    tops = [v for p in panels for b in p.bars for v in [*b.values, *([b.paper] if b.paper is not None else [])]]
    ymax = max([*tops, 1.0]) * 1.18
    seen = set()
    for idx, panel in enumerate(panels):
        ax = axes[idx // ncols][idx % ncols]
        ours: dict[str, list] = {"x": [], "mean": [], "face": []}  # drawn in one call each: a panel may have hundreds
        spread: dict[str, list] = {"x": [], "mean": [], "std": []}
        dots: dict[str, list] = {"x": [], "y": []}
        for x, bar in enumerate(panel.bars):
            stat = bar.stat
            if stat.mean is None:
                ax.text(x, ymax * 0.02, bar.status or "missing", rotation=90, ha="center", va="bottom",
                        fontsize=8, color="#666666")
                seen.add("status")
                continue
            if bar.authors:
                ax.bar(x, stat.mean, width=0.7, color=_AUTHORS, edgecolor="#333333", hatch="//", zorder=2)
            else:
                for key, value in (("x", x), ("mean", stat.mean), ("face", color[bar.color_key or bar.label])):
                    ours[key].append(value)
            if stat.std is not None:
                for key, value in (("x", x), ("mean", stat.mean), ("std", stat.std)):
                    spread[key].append(value)
                seen.add("std")
            if not bar.authors:
                step = min(0.1, 0.5 / len(bar.values))
                dots["x"] += [x + (i - (len(bar.values) - 1) / 2) * step for i in range(len(bar.values))]
                dots["y"] += bar.values
                seen.add("seed")
            if not dense:  # inside the bar, at its foot: clear of the error bar, the seed dots and the paper line
                ax.text(x, ymax * 0.02, f"{stat.mean:.1f}", ha="center", va="bottom", fontsize=8.5, zorder=5,
                        color="black" if bar.authors else "white", fontweight="bold",
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": _AUTHORS, "edgecolor": "none"}
                        if bar.authors else None)
            seen.add("authors" if bar.authors else "mean")
        if ours["x"]:
            ax.bar(ours["x"], ours["mean"], width=0.7, color=ours["face"], edgecolor=ours["face"], zorder=2)
        if spread["x"]:
            ax.errorbar(spread["x"], spread["mean"], yerr=spread["std"], color="#222222", capsize=2 if dense else 4,
                        linewidth=1.2, linestyle="none", zorder=3)
        if dots["x"]:
            ax.scatter(dots["x"], dots["y"], s=6 if dense else 14, color="black", zorder=4)
        for x, bar in enumerate(panel.bars):
            if bar.paper is not None:
                ax.plot([x - 0.42, x + 0.42], [bar.paper, bar.paper], color="black", linewidth=2.2, zorder=6)
                ax.text(x, bar.paper + ymax * 0.012, f"paper {bar.paper:.1f}", ha="center", va="bottom", fontsize=7,
                        zorder=7, bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                                        "alpha": 0.8})
                seen.add("paper")
        if dense:
            ax.set_xticks(range(len(panel.bars)), [b.label.replace("\n", " ") for b in panel.bars], fontsize=6,
                          rotation=90)
        else:
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
    dense = len(heat.rows) * len(heat.columns) > DENSE_CELLS
    tall, wide = len(heat.rows) > DENSE_LINES, len(heat.columns) > DENSE_LINES
    width = min(MAX_WIDTH_IN, 0.15 * len(heat.columns) + 2.6 + 0.06 * max(map(len, heat.rows))) if wide else \
        max(4.0, 1.15 * len(heat.columns) + 2.6)
    label_in = 0.06 * max(map(len, heat.columns)) if wide else 0.0  # upright column labels
    fig = _new_figure(width, (0.12 if tall else 0.3) * len(heat.rows) + 1.9 + label_in)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    for i, row in enumerate([] if dense else heat.values):
        for j, value in enumerate(row):
            text = "–" if value is None else f"{value:.1f}"
            dark = value is not None and value < 60
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    if wide:
        ax.set_xticks(range(len(heat.columns)), heat.columns, fontsize=5.5, rotation=90)
    else:
        ax.set_xticks(range(len(heat.columns)), ["\n".join(textwrap.wrap(c, 16)) for c in heat.columns], fontsize=8)
    ax.set_yticks(range(len(heat.rows)), heat.rows, fontsize=5.5 if tall else 8)
    ax.xaxis.tick_top()
    if heat.rows and heat.rows[-1] == "mean":
        ax.axhline(len(heat.rows) - 1.5, color="white", linewidth=2)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="IoU (%)")
    fig.suptitle(heat.title, fontsize=10)
    if heat.note:
        fig.text(0.01, 0.005, heat.note, fontsize=7.5, color="#444444", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return _png(fig)
