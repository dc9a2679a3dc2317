"""What a finished (or partial) study leaves behind: the trials table, parameter importances, the best config as a
YAML overlay, and the MLflow runs (a parent run per study, a child run per Optuna trial)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def write_text(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write atomically (temporary name in the same folder, then rename); a full disk is a DiskFullError and leaves
    no temporary file."""
    from more.outputs import atomic_write

    return atomic_write(path, text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def trial_rows(study: Any, extra: dict[int, dict[str, Any]] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of every trial: number, state, value, each parameter, duration and any ``extra`` columns
    (by trial number, e.g. the iterations a training trial ran before it was stopped)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    extra = extra or {}
    extra_cols = sorted({k for row in extra.values() for k in row})
    columns = ["trial", "state", "value", *params, *extra_cols, "seconds"]
    rows = []
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        rows.append([t.number, t.state.name, t.value, *(t.params.get(p) for p in params),
                     *(extra.get(t.number, {}).get(c) for c in extra_cols), seconds])
    return columns, rows


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_fmt(v) for v in row] for row in rows])
    return out.getvalue()


def to_markdown(columns: list[str], rows: list[list[Any]], *, title: str = "") -> str:
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) or "-" for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def importances(study: Any) -> tuple[dict[str, float], str]:
    """``(importance by parameter, note)``: fANOVA importances of the complete trials, or an empty dict and why not."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    names = sorted({k for t in complete for k in t.params})
    if len(names) < 2:
        return ({names[0]: 1.0} if names else {}), "one parameter: it carries all the importance"
    if len(complete) < 4:
        return {}, f"only {len(complete)} complete trials: too few to estimate importances"
    try:
        return dict(optuna.importance.get_param_importances(study)), "fANOVA over the complete trials"
    except (RuntimeError, ValueError) as exc:
        return {}, f"importances unavailable: {exc}"


def write_importances(study: Any, out: Path) -> dict[str, float]:
    """``importances.csv``, ``importances.md`` and ``importances.png`` (a bar plot) in ``out``."""
    values, note = importances(study)
    rows = [[k, v] for k, v in sorted(values.items(), key=lambda kv: -kv[1])]
    write_text(out / "importances.csv", to_csv(["param", "importance"], rows))
    write_text(out / "importances.md", to_markdown(["param", "importance"], rows, title="Parameter importances")
               + f"\n{note}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(1, len(rows))))
    if rows:
        ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#4c72b0")
        ax.set_xlabel("importance")
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
        ax.set_axis_off()
    ax.set_title(f"parameter importances ({study.study_name})", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_text(out / "importances.png", buf.getvalue())
    return values


def best_overlay(base: dict[str, Any], best: dict[str, Any], *, comment: str) -> str:
    """A YAML config file loadable by :func:`more.config.load_config`: ``base`` (``{preset: X}`` plus dotted keys,
    or a full flat config) with the best values as dotted keys on top."""
    body = {**base, **{k: _plain(v) for k, v in best.items()}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=120)
    return "".join(f"# {line}\n" for line in comment.splitlines()) + text


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def write_outputs(study: Any, out: Path, *, base: dict[str, Any], title: str,
                  extra: dict[int, dict[str, Any]] | None = None,
                  report: dict[str, Any] | None = None) -> dict[str, Any]:
    """trials.csv/.md, importances.*, best.yaml and best.json in ``out``; returns the best record (empty without
    a complete trial).

    Args:
        report: the best and the config's values scored on the report split (a cached search's
            ``{"split", "source", "images", "pixels", "best": {...}, "default": {...}}``), kept in best.json under
            ``report`` and named in best.yaml's header.
    """
    columns, rows = trial_rows(study, extra)
    write_text(out / "trials.csv", to_csv(columns, rows))
    write_text(out / "trials.md", to_markdown(columns, rows, title=title))
    write_importances(study, out)
    try:
        best = study.best_trial
    except ValueError:
        return {}
    record = {"study": study.study_name, "trial": best.number, "value": best.value, "params": best.params}
    comment = f"best of Optuna study {study.study_name}: trial {best.number}, value {best.value:.6g}"
    if report:
        record["report"] = report
        comment += (f"\non the report split {report['split']}: {report['best']['miou']:.6g} (the config's "
                    f"{report['default']['eval.bkg_thre']:.6g}: {report['default']['miou']:.6g})")
    write_text(out / "best.json", json.dumps(record, indent=2, default=str) + "\n")
    write_text(out / "best.yaml", best_overlay(base, best.params, comment=comment))
    return record


def log_study(study: Any, out: Path, *, spec_name: str, digest: str, spec_text: str, metric: str,
              tracking_uri: str | None = None, extra: dict[int, dict[str, Any]] | None = None,
              run_ids: dict[int, str] | None = None,
              parent_metrics: dict[str, float] | None = None) -> tuple[str | None, int]:
    """Mirror the study into MLflow: the parent run of the study (``<name>-<hash>``, reused on resume) and one child
    run per finished Optuna trial not logged yet (found by its ``more.trial_key`` tag), each in one ``log_batch``
    (params = the trial's values, metric ``metric`` = its value, the ``extra`` columns as metrics); the tables,
    importances and best config go to the parent's artifacts. ``run_ids`` maps trials that already have a run
    (a training trial's own run) to it: those get the Optuna tags only. ``parent_metrics`` (e.g. the report split's
    scores) go on the parent run at step = the study's trial count, so a resumed study adds a point.

    Returns:
        (parent run id or None when tracking is off, number of child runs created).
    """
    from mlflow.entities import Metric, Param, RunTag

    from more.provenance import git_sha
    from more.tracking import LaunchTracker

    launch = LaunchTracker.start(tracking_uri, spec_name, digest, spec_text, git_sha())
    if not launch.enabled:
        return None, 0
    client, parent = launch.client, launch.run_id
    logged = {r.data.tags.get("more.trial_key") for r in launch.trial_runs()}
    created = 0
    now = 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("RUNNING", "WAITING"):
            continue
        key = f"{digest}:trial_{t.number:04d}"
        tags = {"more.kind": "trial", "more.trial_key": key, "mlflow.parentRunId": parent, "more.spec_name": spec_name,
                "more.spec_hash": digest, "more.optuna_trial": str(t.number), "more.optuna_state": t.state.name,
                "more.sweep": json.dumps(t.params, sort_keys=True, default=str),
                "more.overrides": json.dumps(t.params, sort_keys=True, default=str)}
        run_id = (run_ids or {}).get(t.number)
        if key in logged:
            continue
        if run_id is None:
            run_id = client.create_run(launch.experiment_id, run_name=f"trial_{t.number:04d}",
                                       start_time=_ms(t.datetime_start), tags=tags).info.run_id
        now = _ms(t.datetime_complete) or now
        metrics = [Metric(metric, float(t.value), now, 0)] if t.value is not None else []
        metrics += [Metric(k, float(v), now, 0) for k, v in (extra or {}).get(t.number, {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
        params = [Param(k, str(v)) for k, v in t.params.items()]
        client.log_batch(run_id, metrics=metrics, params=params if (run_ids or {}).get(t.number) is None else (),
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, status="FAILED" if t.state.name == "FAIL" else "FINISHED", end_time=now or None)
        created += 1
    if parent_metrics:
        step, stamp = len(study.get_trials(deepcopy=False)), int(time.time() * 1000)
        launch._call("logging the report split's scores", client.log_batch, parent,
                     metrics=[Metric(k, float(v), stamp, step) for k, v in parent_metrics.items()])
    for name in ("trials.md", "trials.csv", "importances.md", "importances.csv", "importances.png", "best.yaml",
                 "best.json"):
        if (out / name).is_file():
            launch._call(f"logging {name}", client.log_artifact, parent, str(out / name))
    launch.finish("FINISHED")
    return parent, created


def _ms(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None
