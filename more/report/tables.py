"""Table models of the report, built from trial records: Table 3 (component ablation) with its paired comparison,
Table 4 (per-class IoU and confusion ratio), one sensitivity table per swept key, and the missing/failed trials.

A :class:`Table` holds typed cells (:class:`~more.report.stats.Stat`, :class:`Check`, :class:`Delta`,
:class:`Num`, :class:`PValue`, text); :mod:`more.report.render` turns it into Markdown, LaTeX or CSV.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from more.report.precision import PRECISION_MARK, DefinedPrecision, defined_precision, left_out_text, precision_notes
from more.report.sources import FINISHED, TrialRecord
from more.report.stats import Paired, Stat, describe, paired_comparison

OUTPUT_LABELS = {"seg": "Seg", "cam": "CAM", "aux_cam": "aux CAM", "lam": "LAM", "fused": "Fused"}
METRICS = (("precision", "Precision"), ("recall", "Recall"), ("miou", "mIoU"))
SHORT = {"precision": "P", "recall": "R", "miou": "mIoU"}
REFERENCE = "more"  # the full model's condition name
CHECK_RULE = "L_cre ✓ iff lir.cre_weight > 0, L_ure ✓ iff lir.ure_weight > 0, GCR ✓ iff gcr.enabled"


@dataclass(frozen=True)
class Check:
    """A component check mark derived from the runs' configs (None: unknown or not the same in every run)."""

    value: bool | None


@dataclass(frozen=True)
class Delta:
    """A signed difference (rendered with its sign)."""

    value: float | None


@dataclass(frozen=True)
class Num:
    value: float | None
    digits: int = 2


@dataclass(frozen=True)
class PValue:
    value: float | None


@dataclass(frozen=True)
class Marked:
    """A cell followed by a footnote mark (the note that explains it is in the table's notes)."""

    value: Any
    mark: str


@dataclass(frozen=True)
class Column:
    """``key`` names the CSV column(s); ``header`` is the Markdown header; ``tex`` a raw LaTeX header if given;
    ``csv_only`` columns are left out of Markdown and LaTeX."""

    key: str
    header: str
    tex: str | None = None
    align: str = "r"
    csv_only: bool = False


@dataclass
class Table:
    name: str  # file stem: table3, table3_paired, table4, sensitivity_<key>, missing
    title: str
    caption: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def metric_key(output: str, metric: str) -> str:
    return f"val/{output}/{metric}"


def is_usable(record: TrialRecord, output: str) -> bool:
    """A finished trial whose chosen evaluation has the output's mIoU."""
    value = record.metrics.get(metric_key(output, "miou"))
    return record.status == FINISHED and value is not None and math.isfinite(value)


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def sweep_text(sweep: dict[str, Any]) -> str:
    return " ".join(f"{k}={value_text(v)}" for k, v in sweep.items())


# ----------------------------------------------------------------------------------------------- grouping


@dataclass
class Group:
    """The trials of one condition at one sweep point (one row of Table 3)."""

    condition: str
    sweep: dict[str, Any]
    records: list[TrialRecord]

    @property
    def label(self) -> str:
        return f"{self.condition} ({sweep_text(self.sweep)})" if self.sweep else self.condition

    def values(self, key: str, output: str) -> dict[int, float]:
        """seed -> value of a metric over the usable trials (trials without a seed are keyed by position)."""
        out: dict[int, float] = {}
        for i, r in enumerate(self.records):
            if is_usable(r, output) and key in r.metrics:
                out[r.seed if r.seed is not None else -1 - i] = r.metrics[key]
        return out

    def precisions(self, output: str) -> dict[int, DefinedPrecision]:
        """seed -> the run's mean precision over the classes where it is defined, over the usable trials."""
        return {r.seed if r.seed is not None else -1 - i: defined_precision(r, output)
                for i, r in enumerate(self.records) if is_usable(r, output)}

    def metric_values(self, metric: str, output: str) -> dict[int, float]:
        """seed -> a Table 3 metric: precision over the classes where it is defined (see
        :mod:`more.report.precision`), recall and mIoU as logged."""
        if metric == "precision":
            return {seed: p.value for seed, p in self.precisions(output).items() if p.value is not None}
        return self.values(metric_key(output, metric), output)

    def stat(self, key: str, output: str) -> Stat:
        return describe(self.values(key, output).values())


def group_records(records: list[TrialRecord], conditions: list[str]) -> list[Group]:
    """Groups by (condition, sweep point), conditions in spec order, then in order of appearance."""
    groups: dict[tuple[str, str], Group] = {}
    for r in records:
        key = (r.condition, json.dumps(r.sweep, sort_keys=True, default=str))
        groups.setdefault(key, Group(r.condition, dict(r.sweep), [])).records.append(r)
    order = {c: i for i, c in enumerate(conditions)}
    return sorted(groups.values(), key=lambda g: order.get(g.condition, len(order)))


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def component_checks(records: list[TrialRecord]) -> tuple[Check, Check, Check]:
    """(L_cre, L_ure, GCR) from the runs' resolved configs: the same answer in every run that has the key, else
    unknown."""
    def check(key: str, rule: Any) -> Check:
        seen = {rule(r.config[key]) for r in records if key in r.config}
        return Check(seen.pop() if len(seen) == 1 else None)

    return (check("lir.cre_weight", _positive), check("lir.ure_weight", _positive), check("gcr.enabled", _flag))


def find_reference(groups: list[Group]) -> Group | None:
    """The full MoRe row: condition ``more`` at the base point, else the first row with all three checks."""
    for g in groups:
        if g.condition == REFERENCE and not g.sweep:
            return g
    full = [g for g in groups if all(c.value for c in component_checks(g.records))]
    return next((g for g in full if not g.sweep), full[0] if full else None)


# -------------------------------------------------------------------------------------------------- Table 3


@dataclass
class Table3:
    table: Table
    paired: Table
    reference: str | None


def table3(records: list[TrialRecord], *, output: str, conditions: list[str], checkpoint_text: str,
           paper_rows: dict[str, dict[str, float]] | None = None, title: str = "Table 3") -> Table3:
    """One row per condition (and sweep point): check marks, Precision/Recall/mIoU as mean ± std (n), Δ to MoRe.

    Precision is the mean over the classes where it is defined (:mod:`more.report.precision`), marked † with a note
    naming the classes left out; the CSV keeps the strict mean over all classes as ``precision_*`` next to the shown
    ``precision_defined_*``.
    """
    groups = group_records(records, conditions)
    ref = find_reference(groups)
    ref_stats = {m: describe(ref.metric_values(m, output).values()) for m, _ in METRICS} if ref else {}
    columns = [Column("condition", "Condition", align="l"),
               Column("l_cre", "L_cre", r"$\mathcal{L}_{cre}$", "c"),
               Column("l_ure", "L_ure", r"$\mathcal{L}_{ure}$", "c"), Column("gcr", "GCR", align="c")]
    columns += [Column("precision_defined", "Precision"), Column("precision", "Precision (strict)", csv_only=True)]
    columns += [Column(m, label) for m, label in METRICS if m != "precision"] + [Column("n", "n")]
    columns += [Column(f"delta_{m}", f"Δ{SHORT[m]}", rf"$\Delta${SHORT[m]}") for m, _ in METRICS]
    show_paper = bool(paper_rows) and any(g.condition in paper_rows for g in groups)
    if show_paper:
        columns += [Column(f"paper_{m}", f"Paper {label}") for m, label in METRICS]
    rows, left_out, unknown = [], [], []
    for g in groups:
        cre, ure, gcr = component_checks(g.records)
        row: dict[str, Any] = {"condition": g.label, "l_cre": cre, "l_ure": ure, "gcr": gcr,
                               "precision": g.stat(metric_key(output, "precision"), output)}
        for m, _ in METRICS:
            stat = describe(g.metric_values(m, output).values())
            row["precision_defined" if m == "precision" else m] = stat
            ref_mean = ref_stats[m].mean if ref_stats else None
            row[f"delta_{m}"] = "ref" if g is ref else Delta(
                stat.mean - ref_mean if stat.mean is not None and ref_mean is not None else None)
            if show_paper:
                paper = paper_rows.get(g.condition, {}) if not g.sweep else {}
                row[f"paper_{m}"] = Num(paper.get(m))
        runs = list(g.precisions(output).values())
        if any(p.left_out for p in runs):
            row["precision_defined"] = Marked(row["precision_defined"], PRECISION_MARK)
            left_out.append(f"{g.label}: {left_out_text(runs)}")
        if any(p.value is None for p in runs):
            unknown.append(f"{g.label} ({sum(p.value is None for p in runs)} of {len(runs)})")
        row["n"] = row["miou"].n
        rows.append(row)
    label = OUTPUT_LABELS.get(output, output)
    ref_text = f"Δ = row − {ref.label} (difference of means)" if ref else "no full-MoRe row, so no Δ"
    caption = (f"{title}: component ablation, {label} output on val, mean ± sample std over seeds (n runs); "
               f"{ref_text}; {checkpoint_text}. Check marks derived from each run's config: {CHECK_RULE}.")
    notes = [] if ref else ["no condition named 'more' and no row with all three components: deltas are n/a"]
    notes += precision_notes(left_out, unknown)
    table = Table("table3", title, caption, columns, rows, notes)
    return Table3(table, paired_table(groups, ref, output=output, title=title), ref.label if ref else None)


def paired_table(groups: list[Group], ref: Group | None, *, output: str, title: str = "Table 3") -> Table:
    """Per condition and metric: the paired difference to the reference over the seeds both ran."""
    columns = [Column("condition", "Condition", align="l"), Column("metric", "Metric", align="l"),
               Column("pairs", "pairs"), Column("mean_diff", "mean Δ", r"mean $\Delta$"),
               Column("std_diff", "std Δ", r"std $\Delta$"), Column("t", "t", "$t$"), Column("p", "p", "$p$"),
               Column("verdict", "verdict", align="l")]
    rows = []
    for g in groups:
        if ref is None or g is ref:
            continue
        for m, label in METRICS:
            res: Paired = paired_comparison(g.metric_values(m, output), ref.metric_values(m, output))
            rows.append({"condition": g.label, "metric": label, "pairs": res.n, "mean_diff": Delta(res.mean),
                         "std_diff": Num(res.std), "t": Num(res.t), "p": PValue(res.p), "verdict": res.verdict})
    caption = (f"{title}, paired comparison with {ref.label if ref else 'the full MoRe row'}: for the seeds both "
               f"conditions ran, Δ = condition − reference per seed; paired t-test with n − 1 degrees of freedom, "
               f"two-sided p. Fewer than 3 pairs: n too small to call a difference. Precision as in Table 3 (over the "
               f"classes where it is defined).")
    return Table("table3_paired", f"{title}, paired comparison", caption, columns, rows)


# -------------------------------------------------------------------------------------------------- Table 4


def discover_classes(records: list[TrialRecord], output: str) -> list[str]:
    """Class names with a ``val/<output>/iou/<class>`` metric, in order of appearance, background first."""
    prefix = f"val/{output}/iou/"
    names = list(dict.fromkeys(k[len(prefix):] for r in records for k in r.metrics if k.startswith(prefix)))
    return sorted(names, key=lambda c: c != "background")


def table4(columns_records: list[tuple[str, list[TrialRecord]]], *, output: str, checkpoint_text: str,
           classes: list[str] | None = None, paper_table4: dict[str, Any] | None = None,
           title: str = "Table 4") -> Table:
    """Per-class IoU (mean ± std over seeds) and confusion ratio (FP/TP) per condition or experiment."""
    usable = [(label, [r for r in recs if is_usable(r, output)]) for label, recs in columns_records]
    found = discover_classes([r for _, recs in usable for r in recs], output)
    notes: list[str] = []
    if classes:
        unknown = [c for c in classes if c not in found]
        if unknown:
            notes.append(f"no IoU logged for class(es): {', '.join(unknown)}")
        found = [c for c in classes if c in found]
    columns = [Column("class", "Class", align="l")]
    for label, _ in usable:
        columns += [Column(f"{label}_iou", f"{label} IoU"), Column(f"{label}_cr", f"{label} CR")]
    paper = (paper_table4 or {}).get("MoRe") or {}
    datasets = {str(r.config.get("data.dataset", "")) for _, recs in usable for r in recs}
    # the paper's numbers are VOC classes: a synthetic "boat" is not comparable
    show_paper = output == "seg" and datasets == {"voc"} and any(c in paper for c in found)
    if show_paper:
        columns += [Column("paper_iou", "Paper MoRe IoU"), Column("paper_cr", "Paper MoRe CR")]
    rows, dropped = [], 0
    for cls in [*found, "mean"]:
        row: dict[str, Any] = {"class": cls}
        for label, recs in usable:
            if cls == "mean":
                row[f"{label}_iou"] = describe(r.metrics[metric_key(output, "miou")] for r in recs)
                conf = [r.metrics[metric_key(output, "confusion")] for r in recs
                        if metric_key(output, "confusion") in r.metrics]
            else:
                row[f"{label}_iou"] = describe(r.metrics[f"val/{output}/iou/{cls}"] for r in recs
                                               if f"val/{output}/iou/{cls}" in r.metrics)
                conf = [c for r in recs if (c := class_confusion(r, output, cls)) is not None]
            row[f"{label}_cr"] = describe(conf) if conf else "n/a"
            dropped += sum(1 for v in conf if not math.isfinite(v))
        if show_paper:
            iou, cr = paper.get(cls, (None, None))
            row["paper_iou"], row["paper_cr"] = Num(iou), Num(cr)
        rows.append(row)
    caption = (f"{title}: per-class IoU (mean ± sample std over seeds) and confusion ratio CR = FP/TP, "
               f"{OUTPUT_LABELS.get(output, output)} output on val; {checkpoint_text}. The mean row is the mIoU and "
               f"the mean confusion ratio over all classes. Per-class CR comes from the runs' per_class/iter_N.csv "
               f"artifacts or val/<output>/confusion/<class> metrics (n/a where none was logged).")
    if dropped:
        notes.append(f"{dropped} confusion ratio(s) were inf or NaN (a class predicted but never right, or never "
                     f"present) and are left out of the means; n counts the finite ones")
    return Table("table4", title, caption, columns, rows, notes)


def class_confusion(record: TrialRecord, output: str, cls: str) -> float | None:
    """A class's confusion ratio: from the per-class CSV artifact, else a ``val/<output>/confusion/<class>``
    metric, else None."""
    value = record.confusion.get(output, {}).get(cls)
    return value if value is not None else record.metrics.get(f"val/{output}/confusion/{cls}")


# ---------------------------------------------------------------------------------------------- sensitivity


@dataclass
class Series:
    """One line of a sensitivity plot: a condition (and the other swept keys' values) across the key's values."""

    label: str
    xs: list[Any]
    stats: list[Stat]


@dataclass
class Sensitivity:
    key: str
    table: Table
    series: list[Series]
    numeric: bool  # every value is a number (plot on a numeric axis), else categories


def _order(x: Any) -> tuple[int, float, str]:
    """Numbers ascending, then anything else (lists, text, None) by its text."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (0, float(x), "")
    return (1, 0.0, value_text(x))


def sensitivity(records: list[TrialRecord], key: str, *, output: str, conditions: list[str],
                checkpoint_text: str) -> Sensitivity | None:
    """Precision/Recall/mIoU against the values of one swept key (base-point runs enter at their config value)."""
    points: dict[tuple[str, str], tuple[Any, list[TrialRecord]]] = {}
    series_order: list[str] = []
    for r in records:
        if not is_usable(r, output) or (key not in r.sweep and (r.sweep or key not in r.config)):
            continue
        x = r.sweep.get(key, r.config.get(key))
        others = {k: v for k, v in r.sweep.items() if k != key}
        label = r.condition + (f" ({sweep_text(others)})" if others else "")
        series_order.append(label)
        points.setdefault((label, value_text(x)), (x, []))[1].append(r)
    if not points:
        return None
    xs_all = [x for x, _ in points.values()]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
    order = {c: i for i, c in enumerate(conditions)}
    labels = sorted(dict.fromkeys(series_order), key=lambda s: order.get(s.split(" (")[0], len(order)))
    columns = [Column("series", "Condition", align="l"), Column("value", key, align="l"),
               Column("precision_defined", "Precision"), Column("precision", "Precision (strict)", csv_only=True)]
    columns += [Column(m, label) for m, label in METRICS if m != "precision"] + [Column("n", "n")]
    rows, series, left_out, unknown = [], [], [], []
    for label in labels:
        pts = sorted(((x, recs) for (lab, _), (x, recs) in points.items() if lab == label), key=lambda p: _order(p[0]))
        stats = []
        for x, recs in pts:
            row: dict[str, Any] = {"series": label, "value": value_text(x)}
            for m, _ in METRICS:
                row[m] = describe(r.metrics[metric_key(output, m)] for r in recs if metric_key(output, m) in r.metrics)
            runs = [defined_precision(r, output) for r in recs]
            row["precision_defined"] = describe(p.value for p in runs if p.value is not None)
            if any(p.left_out for p in runs):
                row["precision_defined"] = Marked(row["precision_defined"], PRECISION_MARK)
                left_out.append(f"{label} at {key}={value_text(x)}: {left_out_text(runs)}")
            if any(p.value is None for p in runs):
                unknown.append(f"{label} at {key}={value_text(x)} ({sum(p.value is None for p in runs)} of "
                               f"{len(runs)})")
            row["n"] = row["miou"].n
            rows.append(row)
            stats.append(row["miou"])
        series.append(Series(label, [x for x, _ in pts], stats))
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in key)
    caption = (f"Sensitivity to {key}: {OUTPUT_LABELS.get(output, output)} output on val, mean ± sample std over "
               f"seeds (n runs); {checkpoint_text}. Base-point runs enter at their configured value of {key}.")
    lost = [r.trial for r in records if key in r.sweep and not is_usable(r, output)]
    notes = [f"not finished with results, so not shown: {', '.join(lost)} (see Missing / failed trials)"]
    notes = (notes if lost else []) + precision_notes(left_out, unknown)
    return Sensitivity(key, Table(f"sensitivity_{safe}", f"Sensitivity: {key}", caption, columns, rows, notes),
                       series, numeric)


# ----------------------------------------------------------------------------------------- missing / failed


def problem_table(records: list[TrialRecord], *, output: str) -> Table:
    """Every trial that is not a usable finished run, with its status and error."""
    columns = [Column("trial", "Trial", align="l"), Column("condition", "Condition", align="l"),
               Column("seed", "Seed"), Column("sweep", "Sweep", align="l"), Column("status", "Status", align="l"),
               Column("error", "Error", align="l")]
    rows = []
    for r in records:
        if is_usable(r, output):
            continue
        error = error_summary(r.error) or (f"finished, but no {metric_key(output, 'miou')} at the chosen checkpoint"
                                           if r.status == FINISHED else f"status {r.status}")
        rows.append({"trial": r.trial, "condition": r.condition, "seed": "n/a" if r.seed is None else r.seed,
                     "sweep": sweep_text(r.sweep) or "-", "status": r.status, "error": error})
    caption = ("Trials expected from the spec or tracked but not finished with results; none is left out of sight. "
               "Errors are shortened to their key line; trials.csv holds them in full.")
    return Table("missing", "Missing / failed trials", caption, columns, rows)


def error_summary(text: str, limit: int = 300) -> str:
    """The line of an error that says what happened: the first, or the last of a traceback."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[:limit - 1] + "…"
