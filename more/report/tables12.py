"""Tables 1 and 2 of the paper from tracked inference runs: pseudo labels (seeds, masks) and segmentation (seg,
cam2seg), one column per protocol, mean ± sample std over seeds, the paper's values in columns of their own.

Which run counts: per trial and protocol (:class:`~more.report.protocols.Protocol`), the newest run with a finite
mIoU; older ones are superseded, and the table says so (mark ‡ and a note; ``infer_runs.csv`` lists every run with
what became of it). A cell with fewer counted trials than its row has says ``n=k of m`` and a note names the trials
without a run; a cell with none says why: ``missing`` (no run), ``no ground truth`` (finished without metrics, e.g.
VOC test), ``not finished`` or ``NaN``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from more.report.charts import BarChart, BarItem, BarPanel
from more.report.infer_reader import AuthorsRun, Inference, InferRun
from more.report.protocols import (
    PAPER_TABLE1,
    PAPER_TABLE1_NOTE,
    PAPER_TABLE2,
    PAPER_TABLE2_NOTE,
    VALIDATION,
    PaperValue,
    Protocol,
    dataset_label,
    paper_marks_protocol,
)
from more.report.records import FINISHED, TrialRecord
from more.report.render import tex_escape
from more.report.stats import describe
from more.report.tables import Column, Group, Marked, Num, Table, find_reference, group_records

SUPERSEDED = "‡"
NOT_IN_LOG = "not in the log"
_MAPS = {"cam": "CAM", "lam": "LAM"}
_MAX_LISTED = 8


@dataclass
class Selected:
    """The runs of one trial and protocol, newest first: the newest with a value counts."""

    counted: InferRun | None
    value: float | None
    earlier: list[InferRun] = field(default_factory=list)  # older runs with a value: superseded
    without: list[InferRun] = field(default_factory=list)  # runs that gave no value


def select_runs(runs: list[InferRun]) -> dict[tuple[str, Protocol], Selected]:
    """Per (trial, protocol): the newest run with a finite mIoU counts (start time, then run id, decides)."""
    by: dict[tuple[str, Protocol], list[tuple[InferRun, str]]] = defaultdict(list)
    for run in runs:
        for output in run.outputs():
            by[(run.trial, run.protocol(output))].append((run, output))
    chosen = {}
    for key, items in by.items():
        items.sort(key=lambda item: (item[0].start_time, item[0].run_id), reverse=True)
        valued = [(run, run.value(o)) for run, o in items if run.value(o) is not None]
        without = [run for run, o in items if run.value(o) is None]
        counted, value = valued[0] if valued else (None, None)
        chosen[key] = Selected(counted, value, [run for run, _ in valued[1:]], without)
    return chosen


@dataclass
class Source12:
    """One experiment's input to Tables 1 and 2."""

    name: str
    records: list[TrialRecord]
    conditions: list[str]
    inference: Inference


@dataclass
class Row12:
    label: str
    condition: str
    source: str  # the map of a Table 1 row (cam | lam); "" in Table 2
    trials: list[str]  # the trials the row expects a value from
    selections: dict[tuple[str, Protocol], Selected]
    validation: dict[Protocol, dict[str, float]]  # the trainer's own val/seg/miou per trial (Table 2)
    reference: bool = False  # the full model's row: the paper's values sit beside it
    authors: AuthorsRun | None = None


@dataclass
class Cell:
    values: dict[str, float]  # trial -> the counted value
    expected: list[str]
    status: str = ""  # why there is no value
    superseded: list[tuple[str, Selected]] = field(default_factory=list)

    def shown(self) -> Any:
        if not self.values:
            return self.status or "missing"
        k, m = len(self.values), len(self.expected)
        text = f" (n={k})" if k >= m else f" (n={k} of {m})"
        return Marked(describe(self.values.values()), text + (SUPERSEDED if self.superseded else ""))


@dataclass
class Table12:
    """A rendered table and what its figure and notes need."""

    table: Table
    chart: BarChart
    columns: list[Protocol]
    cells: dict[tuple[str, str], Cell]  # (row label, protocol key) -> cell


def _status(runs: list[InferRun], output: str) -> str:
    finished = [r for r in runs if r.status == FINISHED]
    if any(f"infer/{output}/miou" in r.metrics for r in finished):
        return "NaN"
    if finished:
        return "no ground truth"
    return "not finished" if runs else "missing"


def cell_of(row: Row12, column: Protocol, table: int) -> Cell:
    """The counted values of the row's trials under one protocol, or why there are none."""
    if row.authors is not None:
        value = row.authors.metrics.get("val/seg/miou")
        ok = column.output == VALIDATION and column == row.authors.validation_protocol() and value is not None
        return Cell({row.authors.name: value} if ok else {}, [row.authors.name], "" if ok else NOT_IN_LOG)
    if column.output == VALIDATION:
        values = row.validation.get(column, {})
        return Cell({t: values[t] for t in row.trials if t in values}, row.trials, "missing")
    full = replace(column, source=row.source) if table == 1 else column
    picked = {t: s for t in row.trials if (s := row.selections.get((t, full)))}
    values = {t: s.value for t, s in picked.items() if s.value is not None}
    status = "" if values else _status([r for s in picked.values() for r in s.without], full.output)
    return Cell(values, row.trials, status, [(t, s) for t, s in picked.items() if s.earlier])


def tex_stack(lines: list[str]) -> str:
    """A LaTeX header cell of several centred lines (a nested tabular: no extra package)."""
    return r"\begin{tabular}[b]{@{}c@{}}" + r" \\ ".join(tex_escape(line) for line in lines) + r"\end{tabular}"


# ---------------------------------------------------------------------------------------------------- rows


def _label(condition: str, sweep: dict[str, Any]) -> str:
    return Group(condition, dict(sweep), []).label


def _validation(records: list[TrialRecord]) -> dict[Protocol, dict[str, float]]:
    out: dict[Protocol, dict[str, float]] = defaultdict(dict)
    for r in records:
        value = r.metrics.get("val/seg/miou")
        if r.status == FINISHED and value is not None:
            split = str(r.config.get("eval.split") or "val")
            out[Protocol(str(r.config.get("data.dataset") or ""), split, VALIDATION, "seg")][r.trial] = value
    return dict(out)


def rows_of(src: Source12, table: int, selections: dict[tuple[str, Protocol], Selected], prefix: str = ""
            ) -> tuple[list[Row12], list[str]]:
    """The rows of one experiment (conditions in spec order, then Table 1's maps CAM, LAM) and the conditions with
    finished trials but no run for this table."""
    runs = [r for r in src.inference.runs if any(r.protocol(o).table == table for o in r.outputs())]
    groups = group_records(src.records, src.conditions)
    ref = find_reference(groups)
    finished = {g.label: [r.trial for r in g.records if r.status == FINISHED] for g in groups}
    with_runs: dict[str, list[InferRun]] = defaultdict(list)
    for run in runs:
        with_runs[_label(run.condition, run.sweep)].append(run)
    order = [g.label for g in groups] + [lab for lab in with_runs if lab not in finished]
    sources = sorted({r.source for r in runs}, key=lambda s: (s not in _MAPS, list(_MAPS).index(s)
                                                                 if s in _MAPS else 0, s))
    rows = []
    by_label = {g.label: g for g in groups}
    for label in order:
        if label not in with_runs:
            continue
        trials = list(dict.fromkeys([*finished.get(label, []), *(r.trial for r in with_runs[label])]))
        group = by_label.get(label)
        records = group.records if group else []
        condition = group.condition if group else with_runs[label][0].condition
        for source in (sources if table == 1 else [""]):
            shown = f"{prefix}{label}"
            rows.append(Row12(shown, condition, source, trials, selections, _validation(records),
                              reference=ref is not None and label == ref.label))
    without = [lab for lab in order if lab not in with_runs and finished.get(lab)]
    return rows, without


# -------------------------------------------------------------------------------------------------- tables


def _paper_columns(table: int, columns: list[Protocol], rows: list[Row12]) -> list[PaperValue]:
    if not any(r.reference for r in rows):
        return []
    if table == 1:
        return [p for p in PAPER_TABLE1 if p.source == "cam"]  # one column per family; the row picks the map
    datasets = {c.dataset for c in columns}
    known = [p for p in PAPER_TABLE2 if p.dataset in datasets]
    return known or list(PAPER_TABLE2)


def _paper_value(paper: PaperValue, row: Row12) -> float | None:
    if not row.reference:
        return None
    if paper.family in ("seeds", "masks"):
        match = [p for p in PAPER_TABLE1 if p.family == paper.family and p.source == row.source]
        return match[0].value if match else None
    return paper.value


def build_table12(sources: list[Source12], table: int, *, title: str, checkpoint_text: str) -> Table12 | None:
    """Table 1 (``table=1``) or Table 2 (``table=2``) of one or several experiments; None without any run for it."""
    many = len(sources) > 1
    rows: list[Row12] = []
    notes: list[str] = []
    for src in sources:
        selections = select_runs(src.inference.runs)
        found, without = rows_of(src, table, selections, prefix=f"{src.name}/" if many else "")
        rows += found
        if found and without:
            notes.append(f"no infer run for this table from {', '.join(without)}"
                         + (f" ({src.name})" if many else ""))
    if not rows:
        return None
    columns = sorted({(p.without_source() if table == 1 else p) for src in sources for r in src.inference.runs
                      for o in r.outputs() if (p := r.protocol(o)).table == table}, key=Protocol.sort_key)
    if table == 2:
        columns += _authors_columns(sources, rows, many)
    cells = {(row.label + row.source, c.key()): cell_of(row, c, table) for row in rows for c in columns}
    paper = _paper_columns(table, columns, rows)
    head = [Column("condition", "Condition", align="l")] + ([Column("map", "Map", align="l")] if table == 1 else [])
    tcols = head + [Column(c.key(), c.header(), tex_stack(c.header_lines())) for c in columns]
    tcols += [Column("trials", "trials", csv_only=True)]
    tcols += [Column(p.key if table == 2 else f"paper_{p.family}", p.header,
                     tex_stack(p.header.replace(" (", "\n(").split("\n"))) for p in paper]
    trows = []
    for row in rows:
        line: dict[str, Any] = {"condition": row.label, "map": _MAPS.get(row.source, row.source),
                                "trials": len(row.trials)}
        line.update({c.key(): cells[(row.label + row.source, c.key())].shown() for c in columns})
        line.update({(p.key if table == 2 else f"paper_{p.family}"): Num(_paper_value(p, row)) for p in paper})
        trows.append(line)
    notes += _cell_notes(rows, columns, cells) + _run_notes(rows, columns, cells)
    if paper:
        notes.append(PAPER_TABLE1_NOTE if table == 1 else PAPER_TABLE2_NOTE)
        ours = sorted({dataset_label(c.dataset) for c in columns} - {"VOC", "COCO"})
        if ours:
            notes.append(f"the paper's numbers are on VOC / COCO with ViT-B/16; the runs of {', '.join(ours)} sit "
                         f"beside them for scale only")
    elif any(not r.reference for r in rows):
        notes.append("no full-model row (condition 'more'): the paper's values are not set beside any row")
    what = ("pseudo labels: seeds (the CAM or LAM thresholded at eval.bkg_thre) and masks (seeds + DenseCRF)"
            if table == 1 else "segmentation: the decoder (seg) and label-free cam2seg, raw and after DenseCRF")
    caption = (f"{title}: {what}, mIoU (%) as mean ± sample std over seeds, n = trials with a counted run (of the "
               f"trials in the row). One column per protocol, named in its header: dataset and split, prediction, "
               f"inference scales (horizontal flips always merged), raw or CRF; never two protocols in one cell. "
               f"Per trial and protocol the newest run with a value counts; {checkpoint_text}.")
    name = "table1" if table == 1 else "table2"
    chart = _chart(title, rows, columns, cells, table)
    return Table12(Table(name, title, caption, tcols, trows, notes), chart, columns, cells)


def _authors_columns(sources: list[Source12], rows: list[Row12], many: bool) -> list[Protocol]:
    """Table 2's training-time validation columns, when an authors' run has the numbers: its row, and ours beside
    it (the trainer's own val/seg/miou, the same protocol as the authors' logged validation)."""
    authors = [(src, a) for src in sources for a in src.inference.authors if "val/seg/miou" in a.metrics]
    if not authors:
        return []
    for src, a in authors:
        rows.append(Row12(f"{src.name}/{a.label}" if many else a.label, a.condition, "", [a.name], {}, {},
                          authors=a))
    found = {a.validation_protocol() for _, a in authors} | {p for r in rows for p in r.validation}
    return sorted(found, key=Protocol.sort_key)


def _cell_notes(rows: list[Row12], columns: list[Protocol], cells: dict[tuple[str, str], Cell]) -> list[str]:
    short = []
    for row in rows:
        if row.authors is not None:
            continue
        for c in columns:
            cell = cells[(row.label + row.source, c.key())]
            lacking = [t for t in cell.expected if t not in cell.values]
            if lacking and cell.values:
                where = f"{row.label}{', ' + _MAPS.get(row.source, row.source) if row.source else ''}"
                short.append(f"{where} / {c.header()}: {', '.join(lacking)}")
    if not short:
        return []
    listed = short[:_MAX_LISTED] + ([f"… {len(short) - _MAX_LISTED} more"] if len(short) > _MAX_LISTED else [])
    return ["trials without a counted run in a cell that has others (n = k of m): " + "; ".join(listed)]


def _run_notes(rows: list[Row12], columns: list[Protocol], cells: dict[tuple[str, str], Cell]) -> list[str]:
    notes, listed = [], []
    iterations = set()
    for row in rows:
        for c in columns:
            cell = cells[(row.label + row.source, c.key())]
            for trial, sel in cell.superseded:
                earlier = ", ".join(r.run_id[:8] for r in sel.earlier)
                listed.append(f"{trial} ({c.header()}): run {sel.counted.run_id[:8]} counts, not {earlier}")
            if c.output != VALIDATION and row.authors is None:
                full = replace(c, source=row.source) if row.source else c
                for t in cell.values:
                    counted = row.selections[(t, full)].counted
                    if counted is not None and counted.iteration is not None:
                        iterations.add(counted.iteration)
    if listed:
        more = f"; … {len(listed) - _MAX_LISTED} more (infer_runs.csv lists them all)" if len(listed) > _MAX_LISTED \
            else ""
        notes.append(f"{SUPERSEDED} several infer runs of one trial and protocol: the newest counts. "
                     + "; ".join(listed[:_MAX_LISTED]) + more)
    if len(iterations) > 1:
        its = ", ".join(map(str, sorted(iterations)))
        notes.append(f"the counted runs used checkpoints of different iterations: {its}")
    elif iterations:
        notes.append(f"the counted runs used checkpoints of iteration {iterations.pop()}")
    return notes


def _chart(title: str, rows: list[Row12], columns: list[Protocol], cells: dict[tuple[str, str], Cell],
           table: int) -> BarChart:
    panels, empty = [], []
    for c in columns:
        bars = []
        for row in rows:
            cell = cells[(row.label + row.source, c.key())]
            if row.authors is not None and not cell.values:
                continue  # the authors' run has only its validation panel
            label = row.label + (f"\n{_MAPS.get(row.source, row.source)}" if row.source else "")
            paper = None
            if row.reference:
                full = replace(c, source=row.source) if row.source else c
                papers = PAPER_TABLE1 if table == 1 else PAPER_TABLE2
                paper = next((p.value for p in papers if paper_marks_protocol(p, full, row.source)), None)
            bars.append(BarItem(label, list(cell.values.values()), "" if cell.values else cell.status, paper=paper,
                                authors=row.authors is not None, color_key=row.label))
        if any(b.values for b in bars):
            panels.append(BarPanel(c.header(), bars))
        else:
            empty.append(f"{c.header()} ({', '.join(sorted({b.status for b in bars}))})")
    datasets = {dataset_label(c.dataset) for c in columns}
    notes = [] if datasets & {"VOC", "COCO"} else ["paper lines: VOC numbers, for scale only (other dataset)"]
    notes += [f"no number to draw, see the table: {'; '.join(empty)}"] if empty else []
    return BarChart(title, "mIoU (%)", panels, "\n".join(notes))
