"""The report's sections beyond Tables 3/4: Tables 1 and 2 from inference runs, the list of those runs, the authors'
run in Table 3, and a figure for every table. :mod:`more.report.build` calls these in a few places."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from more.report.authors import add_authors_rows
from more.report.charts import BarChart, HeatMap, table3_chart, table4_heatmap
from more.report.infer_reader import Inference
from more.report.records import Checkpoint, Experiment
from more.report.render import markdown_section
from more.report.tables import Column, Group, Num, Table
from more.report.tables12 import Source12, build_table12, select_runs

Add = Callable[[Table, str], str]  # build.py's add(table, prefix) -> file stem


def inference_of(exp: Experiment) -> Inference | None:
    return getattr(exp, "inference", None)


def source12(exp: Experiment) -> Source12 | None:
    inf = inference_of(exp)
    return Source12(exp.name, exp.records, exp.conditions, inf) if inf is not None and inf.read else None


def add_figure(files: dict[str, str | bytes], md_parts: list[str], name: str, figure: BarChart | HeatMap | None,
               formats: tuple[str, ...]) -> None:
    """Draw ``figure`` to ``<name>.png`` and link it from the Markdown, when PNG is a requested format."""
    if figure is None or "png" not in formats:
        return
    if isinstance(figure, BarChart) and not figure.panels:
        md_parts += [f"(no figure for {figure.title}: {figure.note or 'no number to draw'})", ""]
        return
    from more.report.figures import bar_png, heatmap_png

    files[f"{name}.png"] = bar_png(figure) if isinstance(figure, BarChart) else heatmap_png(figure)
    md_parts += [f"![{figure.title}]({name}.png)", ""]


def inference_sections(exp: Experiment, *, prefix: str, checkpoint_text: str, add: Add,
                       files: dict[str, str | bytes], formats: tuple[str, ...]) -> list[str]:
    """Tables 1 and 2 of one experiment with their figures and ``infer_runs.csv``; one line when there are none."""
    inf = inference_of(exp)
    if inf is None or not inf.read:
        why = inf.notes[0] if inf is not None and inf.notes else "MLflow was not read"
        return [f"Tables 1 and 2: no infer runs read ({why}).", ""]
    if not inf.runs:
        return ["Tables 1 and 2: no infer runs of this spec's trials are tracked (`python -m more infer` on a "
                "trial's checkpoint makes them).", ""]
    src = Source12(exp.name, exp.records, exp.conditions, inf)
    parts: list[str] = []
    for number in (1, 2):
        t = build_table12([src], number, title=f"Table {number} ({exp.name})", checkpoint_text=checkpoint_text)
        if t is None:
            what = "seeds or masks" if number == 1 else "seg or cam2seg"
            parts += [f"Table {number}: no {what} infer runs of this spec's trials.", ""]
            continue
        if number == 1:
            t.table.notes += [f"{a.label} has no train-split numbers in its log, so no row here" for a in inf.authors]
        name = add(t.table, prefix)
        parts.append(markdown_section(t.table, level=3))
        add_figure(files, parts, name, t.chart, formats)
    if "csv" in formats:
        from more.report.render import csv_text

        files[f"{prefix}infer_runs.csv"] = csv_text(infer_runs_table(inf))
    return parts


def cross_table2(experiments: list[Experiment], *, checkpoint_text: str, add: Add, files: dict[str, str | bytes],
                 formats: tuple[str, ...]) -> list[str]:
    """Table 2 across experiments (e.g. a VOC spec and a COCO spec), when more than one has runs for it."""
    sources = [s for e in experiments if (s := source12(e)) is not None and s.inference.runs]
    if len(sources) < 2:
        return []
    t = build_table12(sources, 2, title="Table 2 (across experiments)", checkpoint_text=checkpoint_text)
    if t is None:
        return []
    name = add(t.table, "")
    parts = [markdown_section(t.table)]
    add_figure(files, parts, name, t.chart, formats)
    return parts


def add_authors(exp: Experiment, table: Table, groups: list[Group], *, output: str, reference: str | None,
                checkpoint: Checkpoint) -> list[Any]:
    """The authors' runs of ``exp`` as rows of its Table 3; returns them (for the figure)."""
    inf = inference_of(exp)
    runs = inf.authors if inf is not None else []
    add_authors_rows(table, runs, output=output, groups=groups, reference_label=reference, checkpoint=checkpoint)
    return runs


def table3_figure(groups: list[Group], authors: list[Any], *, output: str, paper_rows: dict | None,
                  title: str) -> BarChart:
    return table3_chart(groups, output=output, paper_rows=paper_rows,
                        authors=[(a.label, a.condition, {m: a.metrics.get(f"val/{output}/{m}")
                                                          for m in ("precision", "recall", "miou")}) for a in authors],
                        title=title)


def table4_figure(table: Table) -> HeatMap | None:
    return table4_heatmap(table, title=table.title)


def infer_runs_table(inf: Inference) -> Table:
    """Every infer run read, one line per output it made: its protocol, its value, and whether it counts."""
    selections = select_runs(inf.runs)
    fate: dict[tuple[str, str], str] = {}
    for (_, protocol), sel in selections.items():
        if sel.counted is not None:
            fate[(sel.counted.run_id, protocol.output)] = "counts"
            for run in sel.earlier:
                fate[(run.run_id, protocol.output)] = f"superseded by {sel.counted.run_id}"
    keys = ("trial", "condition", "seed", "task", "output", "source", "dataset", "split", "scales", "multiscale",
            "post", "iteration", "started", "status", "miou", "counted", "run_id", "out")
    columns = [Column(k, k, align="r" if k == "miou" else "l") for k in keys]
    rows = []
    for run in sorted(inf.runs, key=lambda r: (r.trial, r.start_time)):
        for output in run.outputs():
            p = run.protocol(output)
            value = run.value(output)
            started = datetime.fromtimestamp(run.start_time / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append({
                "trial": run.trial, "condition": run.condition, "seed": "" if run.seed is None else run.seed,
                "task": run.task, "output": output, "source": p.source, "dataset": run.dataset, "split": run.split,
                "scales": " ".join(f"{s:g}" for s in run.scales or ()), "multiscale": _text(run.multiscale),
                "post": p.post, "iteration": "" if run.iteration is None else run.iteration, "started": started,
                "status": run.status, "miou": Num(value, 4),
                "counted": fate.get((run.run_id, output), "no value"), "run_id": run.run_id, "out": run.out})
    return Table("infer_runs", "Infer runs", "Every infer run of the spec's trials read from MLflow.", columns, rows)


def _text(flag: bool | None) -> str:
    return "" if flag is None else str(flag).lower()
