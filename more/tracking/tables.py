"""Per-class tables of one evaluation, built from the trainer's flat metrics (no MLflow, no torch).

The trainer reports per-class values as ``val/<output>/<quantity>/<class>`` (``iou`` always; ``confusion``,
``precision`` and ``recall`` when it reports them) and the means as ``val/<output>/<quantity>`` (``miou`` for IoU).
The CSV is wide, one row per class plus a ``mean`` row, columns ``<output>/<quantity>``; the report reads the
``<output>/confusion`` columns back (``more.report.mlflow_reader.parse_per_class_csv``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

QUANTITIES = ("iou", "confusion", "precision", "recall")  # column order within an output
MEAN_KEYS = {"iou": "miou", "confusion": "confusion", "precision": "precision", "recall": "recall"}
MEAN_ROW = "mean"


@dataclass(frozen=True)
class PerClassTable:
    """``values[column][row]``; columns are ``<output>/<quantity>``, rows the class names then ``mean``."""

    columns: list[str]
    rows: list[str]
    values: dict[str, list[float | None]]


def per_class_table(metrics: Mapping[str, float], class_names: Sequence[str], *, prefix: str = "val/") -> PerClassTable:
    """Collect every per-class value of ``metrics`` into one table.

    Args:
        metrics: the trainer's report dict (``val/cam/iou/background`` ...).
        class_names: K names, background first (their order is the row order).
        prefix: the split prefix of the keys.

    Returns:
        A table whose columns appear in output order of first appearance, quantities in :data:`QUANTITIES` order;
        a class missing from the metrics is None in that column.
    """
    names = set(class_names)
    found: dict[str, set[str]] = {}  # output -> quantities with at least one per-class value
    for key in metrics:
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/", 2)
        if len(parts) == 3 and parts[1] in QUANTITIES and parts[2] in names:
            found.setdefault(parts[0], set()).add(parts[1])
    columns: list[str] = []
    values: dict[str, list[float | None]] = {}
    for output, quantities in found.items():
        for quantity in (q for q in QUANTITIES if q in quantities):
            column = f"{output}/{quantity}"
            columns.append(column)
            per_class = [_number(metrics.get(f"{prefix}{column}/{name}")) for name in class_names]
            values[column] = [*per_class, _number(metrics.get(f"{prefix}{output}/{MEAN_KEYS[quantity]}"))]
    return PerClassTable(columns=columns, rows=[*class_names, MEAN_ROW], values=values)


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _text(value: float | None, digits: int | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value) if digits is None else f"{value:.{digits}f}"


def to_csv(table: PerClassTable) -> str:
    """``class,<output>/<quantity>,...`` with full precision; missing values are empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", *table.columns])
    for i, row in enumerate(table.rows):
        writer.writerow([row, *(_text(table.values[c][i], None) for c in table.columns)])
    return buf.getvalue()


def to_markdown(table: PerClassTable, *, title: str = "", digits: int = 2) -> str:
    """A Markdown table in the metrics' units (IoU, precision, recall in %, confusion as a ratio)."""
    lines = [f"## {title}", ""] if title else []
    lines.append("| class | " + " | ".join(table.columns) + " |")
    lines.append("|---" * (len(table.columns) + 1) + "|")
    for i, row in enumerate(table.rows):
        shown = f"**{row}**" if row == MEAN_ROW else row
        lines.append(f"| {shown} | " + " | ".join(_text(table.values[c][i], digits) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"
