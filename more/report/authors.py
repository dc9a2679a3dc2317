"""The authors' run in Table 3: their imported training log (``python -m more import-log``) as a row of its own
beside the condition it stands for (default ``more``, the full model), marked as theirs and never averaged with our
seeds: a single run, so n = 1 and no ±, with Δ to our reference row."""

from __future__ import annotations

import math
from typing import Any

from more.report.infer_reader import AuthorsRun
from more.report.records import Checkpoint
from more.report.stats import Stat
from more.report.tables import METRICS, Check, Delta, Group, Marked, Num, Table, component_checks

AUTHORS_MARK = "§"


def _stat(value: float | None) -> Stat:
    return Stat(value, None, 1) if value is not None and math.isfinite(value) else Stat(None, None, 0)


def _mean(cell: Any) -> float | None:
    cell = cell.value if isinstance(cell, Marked) else cell
    return cell.mean if isinstance(cell, Stat) else None


def evaluation_text(run: AuthorsRun, checkpoint: Checkpoint) -> str:
    where = f"iteration {run.iteration}" if run.iteration is not None else "an unknown iteration"
    if checkpoint.kind == "best":
        return f"its best evaluation on {checkpoint.split} ({where})"
    return f"its last evaluation ({where})"


def authors_row(run: AuthorsRun, *, output: str, groups: list[Group], reference: dict[str, Any] | None,
                paper_columns: bool) -> dict[str, Any]:
    """A Table 3 row for one authors' run: check marks of the condition it stands for, its logged Precision /
    Recall / mIoU, n = 1, Δ to our reference row."""
    group = next((g for g in groups if g.condition == run.condition and not g.sweep), None)
    checks = component_checks(group.records) if group else (Check(None),) * 3
    row: dict[str, Any] = {"condition": Marked(run.label, AUTHORS_MARK), "l_cre": checks[0], "l_ure": checks[1],
                           "gcr": checks[2]}
    for metric, _ in METRICS:
        stat = _stat(run.metrics.get(f"val/{output}/{metric}"))
        row["precision_defined" if metric == "precision" else metric] = stat
        if metric == "precision":
            row["precision"] = stat  # the log's m-Precision: the plain mean over all classes
        ref = _mean(reference.get("precision_defined" if metric == "precision" else metric)) if reference else None
        row[f"delta_{metric}"] = Delta(stat.mean - ref if stat.mean is not None and ref is not None else None)
        if paper_columns:
            row[f"paper_{metric}"] = Num(None)
    row["n"] = row["miou"].n
    return row


def add_authors_rows(table: Table, runs: list[AuthorsRun], *, output: str, groups: list[Group],
                     reference_label: str | None, checkpoint: Checkpoint) -> None:
    """Insert a row per authors' run after the row of the condition it stands for (else at the end), with a note."""
    if not runs:
        return
    labels = [r["condition"] for r in table.rows]
    reference = table.rows[labels.index(reference_label)] if reference_label in labels else None
    paper_columns = any(c.key.startswith("paper_") for c in table.columns)
    for run in runs:
        row = authors_row(run, output=output, groups=groups, reference=reference, paper_columns=paper_columns)
        at = max((i for i, lab in enumerate(labels) if lab == run.condition), default=len(labels) - 1) + 1
        table.rows.insert(at, row)
        labels.insert(at, row["condition"])
        missing = [m for m, _ in METRICS if f"val/{output}/{m}" not in run.metrics]
        table.notes.append(
            f"{AUTHORS_MARK} {run.label}: the authors' training log imported by `more import-log` (MLflow run "
            f"{run.run_id}), {evaluation_text(run, checkpoint)}; one run, never averaged with our seeds; Precision "
            f"is the log's m-Precision over all classes; Δ = its value − {reference_label or 'no reference row'}"
            + (f"; not in the log: {', '.join(missing)}" if missing else ""))
