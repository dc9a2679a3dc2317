"""The Precision column's "defined" mean: the mean over the classes whose precision is defined.

A class that is never predicted has precision TP / (TP + FP) = 0 / 0, so the strict mean over all classes (the
reference's m-Precision, logged as ``val/<output>/precision``) is NaN whenever one class is never predicted. The report
shows the mean over the classes where precision is defined instead, names the classes it left out and keeps the strict
value in the CSV.

Per-class precision comes from ``val/<output>/precision/<class>`` metrics when a run logged them, else from the
per-class confusion ratio CR = FP / TP that every run logs (per-class CSV artifact or ``val/<output>/confusion/<class>``
metrics): precision = TP / (TP + FP) = 1 / (1 + CR), which is 0 for CR = inf (predicted, never right) and undefined
exactly where CR is 0 / 0 (never predicted; a class with FP = 0 and TP = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from more.report.sources import TrialRecord

MEAN_ROW = "mean"  # the per-class CSV's row of means, not a class
PRECISION_MARK = "†"  # marks a mean that left classes out


@dataclass(frozen=True)
class DefinedPrecision:
    """One run's mean precision over the classes where it is defined.

    Attributes:
        value: that mean in % (None when it cannot be computed: no per-class values logged, or no class defined).
        left_out: the classes whose precision is undefined (never predicted), in class order.
        strict: the logged mean over all classes (NaN when a class is left out), None if not logged.
    """

    value: float | None
    left_out: tuple[str, ...]
    strict: float | None


def run_classes(record: TrialRecord, output: str) -> list[str]:
    """The run's class names: those with a per-class IoU (the trainer logs one for every class), else those with a
    per-class confusion ratio or precision, background first."""
    names: list[str] = []
    for quantity in ("iou", "precision", "confusion"):
        prefix = f"val/{output}/{quantity}/"
        names = [k[len(prefix):] for k in record.metrics if k.startswith(prefix)]
        if names:
            break
    if not names:
        names = [c for c in record.confusion.get(output, {}) if c != MEAN_ROW]
    return sorted(dict.fromkeys(names), key=lambda c: c != "background")


def class_precision(record: TrialRecord, output: str, cls: str) -> float | None:
    """A class's precision in % (NaN when undefined), or None when the run logged nothing to compute it from."""
    logged = record.metrics.get(f"val/{output}/precision/{cls}")
    if logged is not None:
        return logged
    ratio = record.confusion.get(output, {}).get(cls)
    if ratio is None:
        ratio = record.metrics.get(f"val/{output}/confusion/{cls}")
    if ratio is None:
        return None
    # 1 / (1 + inf) = 0; MLflow stores inf as the largest float, which gives 100 / (1 + 1.8e308) ~ 0 as well
    return math.nan if math.isnan(ratio) else 100.0 / (1.0 + ratio)


def defined_precision(record: TrialRecord, output: str) -> DefinedPrecision:
    """The mean precision of ``record`` over the classes where it is defined (see the module docstring)."""
    strict = record.metrics.get(f"val/{output}/precision")
    if strict is not None and math.isfinite(strict):
        return DefinedPrecision(strict, (), strict)  # every class defined: the strict mean is the answer
    per_class = {c: class_precision(record, output, c) for c in run_classes(record, output)}
    if not per_class or any(p is None for p in per_class.values()):
        return DefinedPrecision(None, (), strict)
    defined = [p for p in per_class.values() if math.isfinite(p)]
    left_out = tuple(c for c, p in per_class.items() if not math.isfinite(p))
    return DefinedPrecision(sum(defined) / len(defined) if defined else None, left_out, strict)


def left_out_text(runs: list[DefinedPrecision]) -> str:
    """``boat (3 of 3 runs), cat (1 of 3 runs)``: the classes left out of a group's runs and how often."""
    counts: dict[str, int] = {}
    for run in runs:
        for cls in run.left_out:
            counts[cls] = counts.get(cls, 0) + 1
    return ", ".join(f"{c} ({n} of {len(runs)} run{'s' if len(runs) != 1 else ''})" for c, n in counts.items())


def precision_notes(left_out: list[str], unknown: list[str]) -> list[str]:
    """The footnote of the † Precision cells (``left_out``: "row: classes (k of n runs)") and of runs whose precision
    could not be computed."""
    notes = []
    if left_out:
        notes.append(f"{PRECISION_MARK} Precision over the classes where it is defined: a class that is never "
                     f"predicted has precision 0/0, which makes the strict mean over all classes (the CSV's "
                     f"precision_* columns) n/a. Left out: {'; '.join(left_out)}.")
    if unknown:
        notes.append(f"Precision unknown (the strict mean is n/a and no per-class values were logged) for runs of "
                     f"{', '.join(unknown)}: left out of its mean and std.")
    return notes
