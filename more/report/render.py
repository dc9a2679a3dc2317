"""Render report tables as Markdown, LaTeX (booktabs) and CSV, and write files atomically.

Cells are typed (see :mod:`more.report.tables`): a :class:`Stat` reads ``mean ± std`` (no ± for a single seed,
``n/a`` for none), a :class:`Check` a check mark, a :class:`Delta` a signed number, a :class:`Marked` cell its value
and footnote mark. Markdown lists a table's notes under it and LaTeX sets them under the tabular; ``csv_only``
columns appear in the CSV alone. LaTeX needs ``\\usepackage{booktabs,amssymb}`` (for ``\\checkmark``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from more.report.stats import Stat
from more.report.tables import Check, Column, Delta, Marked, Num, PValue, Table

NA = "n/a"
DIGITS = 2
_TEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "✓": r"\checkmark{}", "Δ": r"$\Delta$",
    "≥": r"$\geq$", "≤": r"$\leq$", "−": "--", "–": "--", "<": r"\textless{}", ">": r"\textgreater{}",
    "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}",
}
_MD_ALIGN = {"l": "---", "c": ":-:", "r": "--:"}


def _num(value: float | None, digits: int = DIGITS) -> str:
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return NA if value is None else f"{value:+.{DIGITS}f}"


def _p_text(value: float | None) -> str:
    return NA if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def shown_columns(table: Table) -> list[Column]:
    """The columns of the Markdown and LaTeX tables (all but the CSV-only ones)."""
    return [c for c in table.columns if not c.csv_only]


def cell_markdown(value: Any) -> str:
    if isinstance(value, Marked):
        return cell_markdown(value.value) + value.mark
    if isinstance(value, Stat):
        if value.mean is None:
            return NA
        return _num(value.mean) if value.std is None else f"{_num(value.mean)} ± {_num(value.std)}"
    if isinstance(value, Check):
        return "?" if value.value is None else ("✓" if value.value else "")
    if isinstance(value, Delta):
        return _signed(value.value)
    if isinstance(value, Num):
        return _num(value.value, value.digits)
    if isinstance(value, PValue):
        return _p_text(value.value)
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(table: Table) -> str:
    """The header, alignment row and body lines of a GitHub Markdown table."""
    columns = shown_columns(table)
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join(_MD_ALIGN[c.align] for c in columns) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(cell_markdown(row.get(c.key, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def markdown_section(table: Table, *, level: int = 2) -> str:
    """Title, caption, the table and its notes."""
    parts = [f"{'#' * level} {table.title}", "", table.caption, ""]
    parts.append(markdown_table(table) if table.rows else "(none)\n")
    if table.notes:
        parts += [""] + [f"- {n}" for n in table.notes] + [""]
    return "\n".join(parts)


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters and spell the few Unicode symbols the report uses."""
    return "".join(_TEX_CHARS.get(ch, ch) for ch in str(text))


def cell_tex(value: Any) -> str:
    if isinstance(value, Marked):
        return cell_tex(value.value) + tex_escape(value.mark)
    if isinstance(value, Stat):
        if value.mean is None:
            return NA
        return _num(value.mean) if value.std is None else f"{_num(value.mean)} $\\pm$ {_num(value.std)}"
    if isinstance(value, Check):
        return "?" if value.value is None else (r"\checkmark" if value.value else "")
    if isinstance(value, Delta):
        return NA if value.value is None else f"${_signed(value.value)}$"
    if isinstance(value, (Num, PValue)):
        text = cell_markdown(value)
        return r"$<$0.001" if text == "<0.001" else text
    return tex_escape(" ".join(str(value).split()))


def latex_table(table: Table) -> str:
    """A ``table`` float with a booktabs ``tabular`` (toprule / midrule / bottomrule), the escaped caption and the
    notes in small type under the tabular."""
    columns = shown_columns(table)
    spec = "".join(c.align for c in columns)
    lines = [
        "% requires \\usepackage{booktabs,amssymb}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + tex_escape(table.caption) + "}",
        r"\label{tab:" + table.name.replace("_", "-") + "}",
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join(c.tex if c.tex is not None else tex_escape(c.header) for c in columns) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        lines.append(" & ".join(cell_tex(row.get(c.key, "")) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\smallskip{\footnotesize " + tex_escape(note) + "}" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.10g}"


def csv_text(table: Table) -> str:
    """Machine-readable: column keys as headers; a Stat becomes ``<key>_mean, <key>_std, <key>_n``, a check 1/0
    (empty when unknown), numbers at full precision, n/a as empty."""
    rows = [{k: v.value if isinstance(v, Marked) else v for k, v in r.items()} for r in table.rows]  # no marks
    stat_keys = {c.key for c in table.columns if any(isinstance(r.get(c.key), Stat) for r in rows)}
    header: list[str] = []
    for c in table.columns:
        header += [f"{c.key}_mean", f"{c.key}_std", f"{c.key}_n"] if c.key in stat_keys else [c.key]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        out: list[str] = []
        for c in table.columns:
            value = row.get(c.key, "")
            if c.key in stat_keys:
                stat = value if isinstance(value, Stat) else Stat(None, None, 0)
                out += [_csv_number(stat.mean), _csv_number(stat.std), str(stat.n)]
            elif isinstance(value, Check):
                out.append("" if value.value is None else str(int(value.value)))
            elif isinstance(value, (Delta, Num, PValue)):
                out.append(_csv_number(value.value))
            else:
                out.append("" if value == NA else str(value))
        writer.writerow(out)
    return buf.getvalue()


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
