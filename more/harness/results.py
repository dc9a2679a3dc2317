"""The results table of an ablation: one row per trial, read back from the experiment folder Tune wrote.

Rows are rebuilt from the stored experiment state (``ExperimentAnalysis``), so the same table comes out after a
fresh run, after ``--resume`` and for an experiment that already finished, with no Ray running.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from more.harness.spec import AblationSpec, Trial

FAILED = "ERROR"
FINISHED = "TERMINATED"


@dataclass
class TrialRow:
    """One trial's outcome: its last reported metric value and iteration, or its error."""

    trial: str
    condition: str
    sweep: dict[str, Any]  # the sweep point ({} for the base point)
    seed: int
    status: str  # TERMINATED | ERROR | RUNNING | PENDING | PAUSED | NOT STARTED
    metric: float | None
    iterations: int | None
    node_ip: str
    error: str
    path: str  # Tune's trial folder
    run_dir: str  # the trainer's run folder (config.yaml, metrics.jsonl, eval/, checkpoints/)
    metrics: dict[str, float] = field(default_factory=dict)  # the last report (JSON only)
    content_key: str = ""  # the trial's identity (more.harness.identity)
    code: str = ""  # the code identity it ran at
    origin: str = ""  # set when reused: the experiment folder / trial (or MLflow run) the result comes from

    @property
    def sweep_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.sweep.items())


def error_summary(error: BaseException | None) -> str:
    """``Type: message`` of the exception that ended a trial (unwrapping Ray's task error)."""
    if error is None:
        return ""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip()


def load_rows(spec: AblationSpec, trials: list[Trial], experiment_path: str) -> list[TrialRow]:
    """Rows in the spec's trial order; trials Tune has not created yet are listed as NOT STARTED."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    from more.harness.tune_runner import NAME_KEY, PARAM_KEY, RUN_DIR_KEY

    class TrialStates(ExperimentAnalysis):
        """The experiment's trials and their last results, without reading every trial's progress files into
        dataframes (seconds for a thousand trials; the table needs the last result only)."""

        def _fetch_trial_dataframes(self) -> dict:
            return {}

    analysis = TrialStates(experiment_path, default_metric=spec.metric, default_mode=spec.mode)
    found: dict[str, tuple[Any, Any]] = {}
    for tune_trial, result in zip(analysis.trials, ResultGrid(analysis)):
        found[tune_trial.config[PARAM_KEY][NAME_KEY]] = (tune_trial, result)
    rows = []
    for t in trials:
        if t.name not in found:
            rows.append(not_started_row(t))
            continue
        tune_trial, result = found[t.name]
        metrics = result.metrics or {}
        value = metrics.get(spec.metric)
        iterations = metrics.get("iter")
        run_dir = tune_trial.config[PARAM_KEY].get(RUN_DIR_KEY) or ""
        rows.append(TrialRow(
            trial=t.name, condition=t.condition, sweep=dict(t.sweep), seed=t.seed, status=str(tune_trial.status),
            metric=float(value) if value is not None else None,
            iterations=int(iterations) if iterations is not None else None,
            node_ip=str(metrics.get("node_ip", "")), error=error_summary(result.error), path=str(result.path),
            run_dir=run_dir, metrics={k: float(v) for k, v in metrics.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)},
        ))
    return rows


def not_started_row(trial: Any) -> TrialRow:
    """The row of a trial Tune has not created (yet)."""
    return TrialRow(trial.name, trial.condition, dict(trial.sweep), trial.seed, "NOT STARTED", None, None, "", "", "",
                    "")


def summarize(rows: list[TrialRow]) -> list[dict[str, Any]]:
    """Mean, sample std and count of the metric over seeds, per condition and sweep point (finished trials only)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        values = groups.setdefault((row.condition, row.sweep_text), [])
        if row.status == FINISHED and row.metric is not None and math.isfinite(row.metric):
            values.append(row.metric)
    return [
        {"condition": c, "sweep": s, "n": len(v), "mean": statistics.fmean(v) if v else None,
         "std": statistics.stdev(v) if len(v) > 1 else None}
        for (c, s), v in groups.items()
    ]


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[TrialRow], metric: str) -> str:
    """A Markdown table of the trials followed by the per-condition summary."""
    lines = [f"| trial | condition | sweep | seed | status | {metric} | iterations | node |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        iterations = r.iterations if r.iterations is not None else "-"
        lines.append(f"| {r.trial} | {r.condition} | {r.sweep_text or '-'} | {r.seed} | {r.status} | "
                     f"{_num(r.metric)} | {iterations} | {r.node_ip or '-'} |")
    lines += ["", f"| condition | sweep | n | mean {metric} | std |", "|---|---|---|---|---|"]
    for s in summarize(rows):
        lines.append(f"| {s['condition']} | {s['sweep'] or '-'} | {s['n']} | {_num(s['mean'])} | {_num(s['std'])} |")
    undefined = [r.trial for r in rows if r.status == FINISHED and r.metric is not None and not math.isfinite(r.metric)]
    if undefined:
        lines += ["", f"{metric} is NaN for {len(undefined)} finished trial(s), left out of n: {', '.join(undefined)}."
                  + (" A class in neither the ground truth nor the prediction of a small validation split makes an "
                     "m-IoU NaN (each trial's log names the classes and the split); `val/<output>/miou_present` "
                     "averages the classes present, and a spec may rank on it." if "/miou" in metric else "")]
    failed = [r for r in rows if r.status == FAILED]
    if failed:
        lines += ["", "Failed trials:"] + [f"- {r.trial}: {r.error}" for r in failed]
    reused = [r for r in rows if r.origin]
    if reused:
        lines += ["", "Reused (not run by this launch; same content key):"]
        lines += [f"- {r.trial}: from {r.origin}" + (f" at code {r.code[:12]}" if r.code else "") for r in reused]
    codes = sorted({r.code for r in rows if r.code and r.status == FINISHED})
    if len(codes) > 1:
        lines += ["", "Commits mixed in this table: " + ", ".join(
            f"{c[:12]} ({sum(1 for r in rows if r.code == c)} trials)" for c in codes)]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("trial", "condition", "sweep", "seed", "status", "metric", "iterations", "node_ip", "error", "path",
              "run_dir", "content_key", "code", "origin")


def to_csv(rows: list[TrialRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS))
    writer.writeheader()
    for r in rows:
        writer.writerow({**{k: getattr(r, k) for k in CSV_FIELDS}, "sweep": r.sweep_text})
    return buf.getvalue()


def _strict(value: Any) -> Any:
    """NaN and infinities become null, so the file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def to_json(spec: AblationSpec, spec_hash: str, rows: list[TrialRow]) -> str:
    return json.dumps(_strict({
        "spec": spec.name, "spec_hash": spec_hash, "metric": spec.metric, "mode": spec.mode,
        "trials": [asdict(r) for r in rows], "summary": summarize(rows),
    }), indent=2, allow_nan=False) + "\n"
