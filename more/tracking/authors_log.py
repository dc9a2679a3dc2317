"""Read a training log of the authors' scripts (zwyang6/MoRe ``logs/voc_train.log``, ``logs/coco_train.log``) into
metrics named like ours (no MLflow here: :mod:`more.tracking.authors_run` writes them).

The scripts log through ``logging`` as ``DATE TIME,ms - SCRIPT - LEVEL: message``; a message may continue on the
next lines. What is read:

* the ``args: Namespace(...)`` line (seed, num_classes, log_iters, eval_iters, max_iters, ...), parsed as Python
  literals (``ast.literal_eval``; nothing is executed);
* every ``log_iters`` a loss line ``Iter: N; Elasped: ...; ETA: ...; LR: x; cls_loss: a, cls_loss_aux: b,
  cls_loss_mct: c, ptc_loss: d,  cle_loss: e, une_loss: f, seg_loss: g...``: rank 0's mean of each term over the
  window, unweighted like our ``train/<term>``;
* every ``eval_iters`` (after ``Validating...``) ``val cls score: s`` and a texttable of per-class IoU with the
  means m-Precision, m-Recall, m-ConfutionRatio and m-IoU per column, at the iteration of the last loss line (or
  ``Saving_N_cpt``) before it.

A truncated log is read up to its last complete piece: a loss line cut short keeps the fields before its last comma,
a table without its m-IoU row or closing rule is left out, and :attr:`AuthorsLog.notes` says what was skipped.
"""

from __future__ import annotations

import ast
import datetime
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the loss line's names -> our TERMS (more.train.step); the log has no energy term and no total
LOSS_NAMES = {"cls_loss": "cls", "cls_loss_aux": "cls_aux", "cls_loss_mct": "mct", "ptc_loss": "ptc",
              "cle_loss": "cre", "une_loss": "ure", "seg_loss": "seg"}
# the validation table's columns -> our validation outputs (more.eval.evaluate.OUTPUTS); "Score Map" is the LAM.
# Looked up without spaces: the published VOC log's last table spells one header "Seg_Pre d".
COLUMNS = {"CAM": "cam", "aux_CAM": "aux_cam", "ScoreMap": "lam", "Fused": "fused", "Seg_Pred": "seg"}
# the table's mean rows -> our per-output means (percent, the confusion ratio as a ratio: the same units)
MEANS = {"m-Precision": "precision", "m-Recall": "recall", "m-ConfutionRatio": "confusion", "m-IoU": "miou"}

_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - (\S+) - ([A-Z]+): ?(.*)$")
_LOSS = re.compile(r"^Iter: (\d+); Elasped: ([^;]*); ETA: ([^;]*); LR: ([^;]*);(.*)$")
_SAVING = re.compile(r"^Saving_(\d+)_cpt")
_FIELD = re.compile(r"^\s*([A-Za-z_]+): (\S+)\s*$")


class LogFormatError(ValueError):
    """The file is not a training log in the authors' format, or does not fit the spec it is imported into."""


@dataclass
class Validation:
    """One validation table: ``values[column][row]`` as printed (percent; the confusion ratio as a ratio)."""

    iteration: int
    timestamp_ms: int
    cls_score: float | None
    columns: list[str]
    values: dict[str, dict[str, float]]
    class_rows: list[str]  # the per-class rows in table order (background first)


@dataclass
class AuthorsLog:
    """What a log holds; ``losses[iteration] = (timestamp_ms, lr, {our term: value})``."""

    args: dict[str, Any] = field(default_factory=dict)
    args_line: str = ""
    losses: dict[int, tuple[int, float | None, dict[str, float]]] = field(default_factory=dict)
    validations: dict[int, Validation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def last_iteration(self) -> int:
        return max([*self.losses, *self.validations], default=0)


def _timestamp_ms(date: str, millis: str) -> int:
    # the log's local time, of an unknown zone: read as UTC, which keeps the intervals between lines right
    stamp = datetime.datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(stamp.timestamp() * 1000) + int(millis)


def parse_args_line(line: str) -> dict[str, Any]:
    """``args: Namespace(a=1, b='x', c=(1.0, 0.5))`` -> a dict; only literals are evaluated.

    Raises:
        ValueError: the line is cut short or holds something that is not a literal.
    """
    text = line.strip()
    if not text.startswith("args: Namespace(") or not text.endswith(")"):
        raise ValueError("not a complete 'args: Namespace(...)' line")
    call = ast.parse(text[len("args: "):], mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError("not a Namespace of keyword arguments")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}


def _number(text: str) -> float:
    return float(text)  # "nan" and "inf" included, as the scripts print them


def _loss_fields(rest: str, line_no: int, notes: list[str]) -> dict[str, float]:
    """The ``name: value`` fields after ``LR: x;``; a line without the closing ``...`` was cut: its last field is
    dropped (its value may be cut too)."""
    complete = rest.rstrip().endswith("...")
    body = rest.rstrip()[:-3] if complete else rest
    parts = body.split(",")
    if not complete:
        notes.append(f"line {line_no}: loss line cut short; kept the fields before its last comma")
        parts = parts[:-1]
    out: dict[str, float] = {}
    for part in parts:
        match = _FIELD.match(part)
        if match and match.group(1) in LOSS_NAMES:
            try:
                out[LOSS_NAMES[match.group(1)]] = _number(match.group(2))
            except ValueError:
                notes.append(f"line {line_no}: unreadable value {match.group(2)!r} of {match.group(1)}")
    return out


def _table(lines: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """A texttable (rules ``+---+``, header rule ``+===+``) -> (header, rows); cells of a row that texttable
    wrapped over several lines are joined. None when it is not complete (no closing rule)."""
    if not lines or not lines[-1].startswith("+"):
        return None
    groups: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in lines:
        if line.startswith("+"):
            if current:
                groups.append(current)
            current = []
        elif line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    if current:  # lines after the last rule: cut short
        return None
    rows = []
    for group in groups:
        width = len(group[0])
        if any(len(piece) != width for piece in group):
            return None
        rows.append(["".join(piece[i] for piece in group) for i in range(width)])
    if len(rows) < 2:
        return None
    return rows[0], rows[1:]


def parse_log(text: str) -> AuthorsLog:
    """Read the whole log (see the module docstring)."""
    log = AuthorsLog()
    records: list[tuple[int, int, str, list[str]]] = []  # (line number, timestamp, first line, continuation lines)
    for number, line in enumerate(text.splitlines(), start=1):
        match = _RECORD.match(line)
        if match:
            records.append((number, _timestamp_ms(match.group(1), match.group(2)), match.group(5), []))
        elif records:
            records[-1][3].append(line)
    current = 0  # the iteration the training has reached
    repeated: list[int] = []  # loss lines of an iteration already logged (a run resumed from an earlier checkpoint)
    untabled: list[int] = []  # "Validating..." with no table after it (the published COCO log has several)
    pending: tuple[int, int, float | None] | None = None  # a validation: (iteration, timestamp, cls score)
    for number, stamp, message, more_lines in records:
        loss = _LOSS.match(message)
        if loss:
            if pending is not None:  # training went on (or a resumed run started) without the validation's table
                untabled.append(pending[0])
                pending = None
            current = int(loss.group(1))
            try:
                lr: float | None = _number(loss.group(4))
            except ValueError:
                lr = None
            if current in log.losses:
                repeated.append(current)
            log.losses[current] = (stamp, lr, _loss_fields(loss.group(5), number, log.notes))
            continue
        saving = _SAVING.match(message)
        if saving:
            current = int(saving.group(1))
            continue
        if message.startswith("Validating"):
            pending = (current, stamp, None)
            continue
        if message.startswith("val cls score:") and pending is not None:
            try:
                pending = (pending[0], stamp, _number(message.split(":", 1)[1]))
            except ValueError:
                log.notes.append(f"line {number}: unreadable val cls score")
            continue
        for offset, extra in enumerate(more_lines, start=1):
            if extra.startswith("args: Namespace("):
                log.args_line = extra.strip()
                try:
                    log.args = parse_args_line(extra)
                except (ValueError, SyntaxError):
                    log.notes.append(f"line {number + offset}: args line cut short or unreadable; its values "
                                     f"(seed, ...) are not used")
        table_lines = [ln for ln in more_lines if ln.startswith(("+", "|"))]
        if table_lines and pending is not None:
            validation = _validation(table_lines, pending, number, log.notes)
            if validation is not None:
                if validation.iteration in log.validations:
                    log.notes.append(f"line {number}: a second validation at iteration {validation.iteration}; "
                                     f"the later one is kept")
                log.validations[validation.iteration] = validation
            pending = None
    if repeated:
        log.notes.append(f"{len(repeated)} loss lines repeat an iteration logged before (iterations {repeated[0]} to "
                         f"{repeated[-1]}: a resumed run); the later values are kept")
    if pending is not None:
        untabled.append(pending[0])
    if untabled:
        log.notes.append(f"'Validating...' without a table at iteration {', '.join(map(str, untabled))}: nothing to "
                         f"import there")
    return log


def _validation(lines: list[str], pending: tuple[int, int, float | None], number: int,
                notes: list[str]) -> Validation | None:
    iteration, stamp, cls_score = pending
    parsed = _table(lines)
    if parsed is None or not any(row[0] == "m-IoU" for row in parsed[1]):
        notes.append(f"line {number}: the validation table at iteration {iteration} is incomplete; left out")
        return None
    header, rows = parsed
    columns = header[1:]
    values: dict[str, dict[str, float]] = {c: {} for c in columns}
    class_rows = []
    for row in rows:
        name = row[0]
        if name not in MEANS:
            class_rows.append(name)
        for column, cell in zip(columns, row[1:]):
            try:
                values[column][name] = _number(cell)
            except ValueError:
                values[column][name] = math.nan
                notes.append(f"line {number}: unreadable cell {cell!r} ({name}, {column}) at iteration {iteration}")
    return Validation(iteration, stamp, cls_score, columns, values, class_rows)


def read_log(path: str | Path) -> AuthorsLog:
    """Parse the log file at ``path``.

    Raises:
        LogFormatError: the file holds no loss line and no validation table of the authors' format.
        OSError: the file cannot be read (its name is in the error).
    """
    p = Path(path)
    text = p.read_text(errors="replace")
    log = parse_log(text)
    if not log.losses and not log.validations:
        raise LogFormatError(f"{p}: no training-log lines in the authors' format (zwyang6/MoRe logs/voc_train.log: "
                             f"'DATE TIME,ms - train_voc.py - INFO: Iter: N; ...; LR: x; cls_loss: ...')")
    return log


def metric_points(log: AuthorsLog, class_names: list[str]) -> list[tuple[str, float, int, int]]:
    """``(key, value, step, timestamp_ms)`` of every metric, named like ours: ``train/<term>``, ``train/lr``,
    ``val/<output>/{miou,precision,recall,confusion}``, ``val/<output>/iou/<class>`` (our class names, matched to
    the table's rows by position) and ``val/cls_f1``.

    Raises:
        LogFormatError: a table's class rows do not match ``class_names`` in number.
    """
    points: list[tuple[str, float, int, int]] = []
    for step, (stamp, lr, terms) in sorted(log.losses.items()):
        points += [(f"train/{term}", value, step, stamp) for term, value in terms.items()]
        if lr is not None:
            points.append(("train/lr", lr, step, stamp))
    for step, v in sorted(log.validations.items()):
        if len(v.class_rows) != len(class_names):
            raise LogFormatError(f"the validation table at iteration {step} has {len(v.class_rows)} class rows "
                                 f"({v.class_rows[0]}, {v.class_rows[1] if len(v.class_rows) > 1 else ''}, ...), the "
                                 f"spec's dataset {len(class_names)} ({', '.join(class_names[:3])}, ...)")
        if v.cls_score is not None:
            points.append(("val/cls_f1", v.cls_score, step, v.timestamp_ms))
        for column in v.columns:
            ours = COLUMNS.get(column.replace(" ", ""))
            if ours is None:
                continue
            cells = v.values[column]
            for row, key in MEANS.items():
                if row in cells:
                    points.append((f"val/{ours}/{key}", cells[row], step, v.timestamp_ms))
            for row, name in zip(v.class_rows, class_names):
                points.append((f"val/{ours}/iou/{name}", cells[row], step, v.timestamp_ms))
    return points


def skipped_columns(log: AuthorsLog) -> list[str]:
    """Table columns with no counterpart among our outputs (e.g. ``Seg_CAM`` in the published logs)."""
    return sorted({c for v in log.validations.values() for c in v.columns if c.replace(" ", "") not in COLUMNS})
