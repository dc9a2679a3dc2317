"""Assemble the report of one or more experiments: tables, captions, plots, and the files to write.

Per experiment: Table 3 (+ its paired comparison), one sensitivity table and plot per swept key and the
missing/failed trials; Table 4 compares the conditions of one experiment, or the experiments when several are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.report import sections
from more.report.paper_values import paper_block
from more.report.render import csv_text, latex_table, markdown_section, markdown_table, write_atomic
from more.report.sources import Checkpoint, Experiment, TrialRecord
from more.report.tables import (
    METRICS,
    OUTPUT_LABELS,
    Table,
    find_reference,
    group_records,
    is_usable,
    metric_key,
    problem_table,
    sensitivity,
    sweep_text,
    table3,
    table4,
)

FORMATS = ("md", "tex", "csv", "png")


@dataclass
class ReportOptions:
    output: str = "seg"
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    classes: list[str] | None = None
    formats: tuple[str, ...] = FORMATS
    plot_backend: str = "auto"  # auto | matplotlib | pil


@dataclass
class Report:
    """The rendered report: ``files`` maps a relative path to its content; ``summary`` is what the command prints."""

    markdown: str
    summary: str
    files: dict[str, str | bytes]
    tables: dict[str, Table]


def checkpoint_text(records: list[TrialRecord], checkpoint: Checkpoint, output: str) -> str:
    """Which evaluation the numbers come from, for the captions."""
    its = sorted({r.iteration for r in records if is_usable(r, output) and r.iteration is not None})
    where = ("an unknown iteration" if not its else f"iteration {its[0]}" if len(its) == 1
             else f"iterations {its[0]}–{its[-1]} (differs across runs)")
    if checkpoint.kind == "last":
        return f"numbers from the last evaluation at {where}"
    text = (f"numbers from the best evaluation on {checkpoint.split} (per run, the highest "
            f"{checkpoint.selection_metric(output)}), at {where}")
    if checkpoint.split == "val":
        text += "; chosen on the split it is reported on, so optimistic"
    return text


def _base_groups(exp: Experiment) -> list:
    groups = group_records(exp.records, exp.conditions)
    base = [g for g in groups if not g.sweep]
    return base or groups


def _table4_columns(experiments: list[Experiment]) -> list[tuple[str, list[TrialRecord]]]:
    if len(experiments) == 1:
        return [(g.label, g.records) for g in _base_groups(experiments[0])]
    columns = []
    for exp in experiments:
        groups = _base_groups(exp)
        ref = find_reference(groups)
        if ref is not None or len(groups) == 1:
            columns.append((exp.name, (ref or groups[0]).records))
        else:
            columns += [(f"{exp.name}/{g.label}", g.records) for g in groups]
    return columns


def trials_table(records: list[TrialRecord], output: str) -> Table:
    """Every record, one line each (trials.csv): the raw material of the other tables."""
    from more.report.tables import Column, Num

    columns = [Column(k, k, align="l") for k in ("trial", "condition", "seed", "sweep", "status", "iteration")]
    columns += [Column(m, label) for m, label in METRICS]
    columns += [Column(k, k, align="l") for k in ("run_id", "run_dir", "error")]
    rows = []
    for r in records:
        row: dict[str, Any] = {"trial": r.trial, "condition": r.condition, "seed": "" if r.seed is None else r.seed,
                               "sweep": sweep_text(r.sweep), "status": r.status,
                               "iteration": "" if r.iteration is None else r.iteration,
                               "run_id": r.run_id, "run_dir": r.run_dir, "error": r.error}
        for m, _ in METRICS:
            row[m] = Num(r.metrics.get(metric_key(output, m)))
        rows.append(row)
    return Table("trials", "Trials", "Every trial the report read.", columns, rows)


def build_report(experiments: list[Experiment], options: ReportOptions) -> Report:
    """All tables and plots of the experiments, rendered in the requested formats."""
    from more.report.plots import sensitivity_png

    output, many = options.output, len(experiments) > 1
    tables: dict[str, Table] = {}
    files: dict[str, str | bytes] = {}
    md_parts = [f"# Report: {', '.join(e.name for e in experiments)}", "",
                f"Output: {OUTPUT_LABELS.get(output, output)} (metrics val/{output}/*).", ""]
    summary: list[str] = []

    def add(table: Table, prefix: str) -> str:
        name = f"{prefix}{table.name}"
        tables[name] = table
        if "md" in options.formats:
            files[f"{name}.md"] = markdown_section(table)
        if "tex" in options.formats:
            files[f"{name}.tex"] = latex_table(table)
        if "csv" in options.formats:
            files[f"{name}.csv"] = csv_text(table)
        return name

    for exp in experiments:
        prefix = f"{exp.name}_" if many else ""
        ckpt = checkpoint_text(exp.records, options.checkpoint, output)
        paper = paper_block(exp.name, exp.paper)
        md_parts += [f"## {exp.name} (spec hash {exp.spec_hash})", "", f"Read from {exp.source}.", ""]
        md_parts += [f"- {n}" for n in exp.notes] + ([""] if exp.notes else [])
        md_parts += sections.inference_sections(exp, prefix=prefix, checkpoint_text=ckpt, add=add, files=files,
                                                formats=options.formats)
        t3 = table3(exp.records, output=output, conditions=exp.conditions, checkpoint_text=ckpt,
                    paper_rows=paper["rows"] if paper else None, title=f"Table 3 ({exp.name})")
        if paper and any(c.key.startswith("paper_") for c in t3.table.columns):
            t3.table.notes.append(f"Paper columns: {paper['source']}.")
        groups = group_records(exp.records, exp.conditions)
        authors = sections.add_authors(exp, t3.table, groups, output=output, reference=t3.reference,
                                       checkpoint=options.checkpoint)
        name = add(t3.table, prefix)
        add(t3.paired, prefix)
        md_parts.append(markdown_section(t3.table, level=3))
        sections.add_figure(files, md_parts, name, sections.table3_figure(
            groups, authors, output=output, paper_rows=paper["rows"] if paper else None, title=t3.table.title),
            options.formats)
        md_parts.append(markdown_section(t3.paired, level=3))
        summary += [t3.table.caption, "", markdown_table(t3.table)]
        for key in exp.sweeps:
            sens = sensitivity(exp.records, key, output=output, conditions=exp.conditions, checkpoint_text=ckpt)
            if sens is None:
                md_parts += [f"### Sensitivity: {key}", "", "No finished trial varies this key.", ""]
                continue
            name = add(sens.table, prefix)
            md_parts.append(markdown_section(sens.table, level=3))
            if "png" in options.formats:
                files[f"{name}.png"] = sensitivity_png(
                    sens, ylabel=f"{OUTPUT_LABELS.get(output, output)} mIoU (%)", backend=options.plot_backend)
                md_parts += [f"![{sens.table.title}]({name}.png)", ""]
        if not many:
            t4 = table4(_table4_columns([exp]), output=output, checkpoint_text=ckpt, classes=options.classes,
                        paper_table4=paper["table4"] if paper else None, title=f"Table 4 ({exp.name})")
            name = add(t4, prefix)
            md_parts.append(markdown_section(t4, level=3))
            sections.add_figure(files, md_parts, name, sections.table4_figure(t4), options.formats)
        problems = problem_table(exp.records, output=output)
        add(problems, prefix)
        md_parts.append(markdown_section(problems, level=3))
        if "csv" in options.formats:
            files[f"{prefix}trials.csv"] = csv_text(trials_table(exp.records, output))
    if many:
        records = [r for e in experiments for r in e.records]
        t4 = table4(_table4_columns(experiments), output=output,
                    checkpoint_text=checkpoint_text(records, options.checkpoint, output), classes=options.classes,
                    paper_table4=next((p["table4"] for e in experiments if (p := paper_block(e.name, e.paper))
                                       and p.get("table4")), None), title="Table 4 (across experiments)")
        name = add(t4, "")
        md_parts.append(markdown_section(t4))
        sections.add_figure(files, md_parts, name, sections.table4_figure(t4), options.formats)
        md_parts += sections.cross_table2(experiments, checkpoint_text=checkpoint_text(records, options.checkpoint,
                                          output), add=add, files=files, formats=options.formats)
    markdown = "\n".join(md_parts).rstrip() + "\n"
    if "md" in options.formats:
        files["report.md"] = markdown
    return Report(markdown=markdown, summary="\n".join(summary), files=files, tables=tables)


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write every file of the report atomically under ``out_dir``."""
    return [write_atomic(Path(out_dir) / name, data) for name, data in sorted(report.files.items())]
