"""What the report's figures show, as plain data (drawn by :mod:`more.report.figures`).

Every table gets a figure: Tables 1, 2 and 3 as small multiples of bar charts (one panel per protocol or metric, a
bar per row with its mean, the spread over seeds as an error bar and every seed as a dot, the paper's value as a
black line over the row it belongs to, the authors' run as a hatched bar of its own); Table 4 as a heat map of
per-class IoU. Cells the table shows as missing keep their place in the figure with the same word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from more.report.stats import Stat, describe
from more.report.tables import METRICS, Group, Table


@dataclass
class BarItem:
    """One bar: the values of the seeds (dots), or a status word where the table has no number."""

    label: str
    values: list[float] = field(default_factory=list)
    status: str = ""  # e.g. "missing", "no ground truth" (shown where the bar would be)
    paper: float | None = None  # the paper's value for this bar, drawn as a line over it
    authors: bool = False  # the authors' run: one value, drawn hatched, never averaged with ours
    color_key: str = ""  # bars with the same key share a colour (default: the label)

    @property
    def stat(self) -> Stat:
        return describe(self.values)


@dataclass
class BarPanel:
    title: str
    bars: list[BarItem]


@dataclass
class BarChart:
    title: str
    ylabel: str
    panels: list[BarPanel]
    note: str = ""  # one line under the figure


@dataclass
class HeatMap:
    """Rows (classes) by columns (conditions, experiments, the paper), mean IoU per cell (None: no value)."""

    title: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]
    note: str = ""


def table3_chart(groups: list[Group], *, output: str, paper_rows: dict[str, dict[str, float]] | None,
                 authors: list[tuple[str, str, dict[str, float]]], title: str) -> BarChart:
    """A panel per metric (Precision over the classes where it is defined, Recall, mIoU), a bar per condition (per
    condition and sweep point, in the condition's colour).

    Args:
        authors: (label, condition, {metric: value}) per authors' run, drawn beside our bars.
    """
    panels = []
    for metric, label in METRICS:
        bars = []
        for g in groups:
            values = list(g.metric_values(metric, output).values())
            paper = (paper_rows or {}).get(g.condition, {}).get(metric) if not g.sweep else None
            bars.append(BarItem(g.label, values, "" if values else "no result", paper=paper,
                                color_key=g.condition))  # a condition's sweep points share its colour
        for name, _condition, metrics in authors:
            value = metrics.get(metric)
            ok = value is not None and math.isfinite(value)
            bars.append(BarItem(name, [value] if ok else [], "" if ok else "not in the log", authors=True))
        panels.append(BarPanel(f"{label} (%)", bars))
    return BarChart(title, f"{output} output on val (%)", panels)


def table4_heatmap(table: Table, *, title: str) -> HeatMap | None:
    """Per-class mean IoU of Table 4 (its ``<label>_iou`` columns and the paper's, when shown)."""
    columns = [c for c in table.columns if c.key.endswith("_iou")]
    if not columns or not table.rows:
        return None
    values = []
    for row in table.rows:
        line = []
        for c in columns:
            cell = row.get(c.key)
            mean = cell.mean if isinstance(cell, Stat) else getattr(cell, "value", None)
            line.append(mean if isinstance(mean, (int, float)) and math.isfinite(mean) else None)
        values.append(line)
    names = [c.header.removesuffix(" IoU") for c in columns]
    return HeatMap(title, [str(r["class"]) for r in table.rows], names, values,
                   "IoU (%) per class, mean over seeds; the last row is the mIoU")
