"""Where an ablation stands, read from what its launch leaves on disk (no Ray, no MLflow, never the trainer).

Sources, all in the experiment folder ``<storage>/<spec name>-<hash>``: ``plan.json`` (which trials are reused and
from where), each trial's run folder (``identity.json``: the start of each attempt; ``metrics.jsonl``: iteration,
measured seconds per iteration and the evaluations; ``outcome.json``: the end the driver recorded), Tune's
``error.txt`` beside it, and the launch's claim files (is the launch that trains a trial still alive?).

States: ``done``, ``reused``, ``running``, ``pending`` (the launch is alive but has not started it), ``failed``
(with the error), ``stopped`` (started, unfinished, no live launch: ``--resume`` continues it), ``not started``, and
``waiting`` (another launch trains it; this one reports its result when it ends).

:func:`ablation_status` is the library call behind ``python -m more status`` (:func:`status_text` its table).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.harness.checks import DEFAULT_STORAGE, resolve_storage
from more.harness.claims import CLAIMS_DIR, ClaimSet
from more.harness.identity import IDENTITY_FILE, TrialIdentity
from more.harness.reuse import CONTINUE, KEEP_FAILED, OUTCOME_FILE, PLAN_FILE, REUSE, WAIT, read_plan
from more.harness.spec import AblationSpec, Trial, expand, load_spec, spec_hash
from more.preflight import PreflightError

DONE, REUSED, RUNNING, PENDING, FAILED, STOPPED, NOT_STARTED, WAITING = (
    "done", "reused", "running", "pending", "failed", "stopped", "not started", "waiting")


@dataclass
class TrialStatus:
    trial: str
    state: str
    iteration: int | None = None
    target: int | None = None
    metric: float | None = None
    elapsed_s: float | None = None
    sec_per_iter: float | None = None
    eta_s: float | None = None
    note: str = ""


@dataclass
class ExperimentStatus:
    """Where an ablation stands: every trial's :class:`TrialStatus`, and whether its launch is alive."""

    path: str
    trials: list[TrialStatus]
    gpus_per_trial: float
    launch_alive: bool

    @property
    def gpu_hours_spent(self) -> float:
        return sum(t.elapsed_s or 0.0 for t in self.trials if t.state != REUSED) * self.gpus_per_trial / 3600

    @property
    def gpu_hours_left(self) -> float | None:
        left = [t.eta_s for t in self.trials if t.state in (RUNNING, PENDING, STOPPED, NOT_STARTED, WAITING)]
        if any(x is None for x in left):
            return None
        return sum(left) * self.gpus_per_trial / 3600


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


TAIL_BYTES = 64 * 1024  # read from the end of metrics.jsonl at a time (a long run's file holds thousands of records)


def _last_values(run_dir: Path, metric: str) -> tuple[int | None, float | None, float | None]:
    """The last iteration, the last measured seconds per iteration and the last value of ``metric`` in
    ``metrics.jsonl``: read from its end, further back only until a record with ``metric`` (an evaluation) is found,
    and only the records holding them parsed, so the cost does not grow with the run's length."""
    path = run_dir / "metrics.jsonl"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            start = size
            while True:
                start = max(0, start - TAIL_BYTES)
                fh.seek(start)
                data = fh.read(size - start)
                if start == 0 or f'"{metric}"'.encode() in data:
                    break
    except OSError:
        return None, None, None
    lines = data.splitlines()[1 if start > 0 else 0:]  # a read from the middle starts inside a record

    def last(key: str | None) -> dict[str, Any] | None:
        needle = f'"{key}"'.encode() if key else None
        for line in reversed(lines):
            if needle is None or needle in line:
                try:
                    return json.loads(line)
                except ValueError:
                    continue  # a line being written right now
        return None

    newest, timed, evaluated = last(None), last("time/sec_per_iter"), last(metric)
    iteration = int(newest["iter"]) if newest and isinstance(newest.get("iter"), (int, float)) else None
    spi = timed.get("time/sec_per_iter") if timed else None
    value = evaluated.get(metric) if evaluated else None
    return (iteration, float(spi) if isinstance(spi, (int, float)) else None,
            float(value) if isinstance(value, (int, float)) else None)


def _launch_alive(storage: Path, experiment: str) -> bool:
    """A live owner (same host: its pid exists; elsewhere: a fresh heartbeat) holds a claim for this experiment."""
    probe = ClaimSet(str(storage), experiment=f"status of {experiment}")
    for path in (storage / CLAIMS_DIR).glob("*.json"):
        owner = _read_json(path)
        if isinstance(owner, dict) and owner.get("experiment") == experiment and probe.holder(path.stem):
            return True
    return False


def _failed_since_progress(error: Path, records: Path) -> bool:
    """Tune wrote an error for the trial and the trial has not trained since (a retry would append records)."""
    if not error.is_file():
        return False
    return not records.is_file() or error.stat().st_mtime >= records.stat().st_mtime


def trial_status(trial: Trial, folder: Path, ident: TrialIdentity | None, metric: str, *, alive: bool,
                 now: float) -> TrialStatus:
    run_dir = folder / trial.name / "run"
    target = ident.target_iters if ident else None
    status = TrialStatus(trial.name, NOT_STARTED, target=target)
    started = _read_json(run_dir / IDENTITY_FILE)
    status.iteration, status.sec_per_iter, status.metric = _last_values(run_dir, metric)
    first = (started or {}).get("attempts", [{}])[0].get("started") if started else None
    outcome = _read_json(run_dir / OUTCOME_FILE)
    error = folder / trial.name / "error.txt"
    end = (outcome or {}).get("finished")
    if end is None and (run_dir / "metrics.jsonl").is_file() and not alive:
        end = (run_dir / "metrics.jsonl").stat().st_mtime
    status.elapsed_s = ((end or now) - first) if first else None
    if outcome:
        status.state = DONE if outcome.get("status") == "FINISHED" else FAILED
        status.note = (outcome.get("error") or "")[:200]
        status.iteration = outcome.get("iterations", status.iteration)
    elif started is None:
        status.state = PENDING if alive else NOT_STARTED
    elif target is not None and (status.iteration or 0) >= target:
        status.state = DONE
    elif _failed_since_progress(error, run_dir / "metrics.jsonl"):
        status.state = FAILED
        lines = [ln for ln in error.read_text(errors="replace").splitlines() if ln.strip()]
        status.note = (lines[-1] if lines else "error")[:200] + (" (Tune may retry it)" if alive else "")
    else:
        status.state = RUNNING if alive else STOPPED
    if status.state in (RUNNING, STOPPED) and target is not None and status.sec_per_iter is not None:
        status.eta_s = (target - (status.iteration or 0)) * status.sec_per_iter
    return status


def experiment_status(spec: AblationSpec, trials: list[Trial], folder: str | Path) -> ExperimentStatus:
    """The status of every trial of the spec in its experiment folder (see the module docstring)."""
    folder = Path(folder)
    decisions, identities = read_plan((folder / PLAN_FILE).read_text() if (folder / PLAN_FILE).is_file() else None)
    chosen = {d.trial: d for d in decisions}
    alive = _launch_alive(folder.parent, folder.name)
    now = time.time()
    out = []
    for t in trials:
        d = chosen.get(t.name)
        if d is not None and d.action == WAIT:
            ident = identities.get(t.name)
            out.append(TrialStatus(t.name, WAITING, target=ident.target_iters if ident else None, note=d.why[:200]))
            continue
        if d is not None and d.action in (REUSE, KEEP_FAILED) and d.prior is not None:
            value = d.prior.metrics.get(spec.metric)
            out.append(TrialStatus(t.name, REUSED if d.action == REUSE else FAILED, d.prior.iterations,
                                   identities[t.name].target_iters, value, note=f"from {d.prior.origin}"
                                   if d.action == REUSE else f"kept failed: {d.prior.error}"[:200]))
            continue
        status = trial_status(t, folder, identities.get(t.name), spec.metric, alive=alive, now=now)
        if d is not None and d.action == CONTINUE and d.prior is not None and not status.note:
            status.note = f"continues {d.prior.origin} from iteration {d.prior.iterations}"
        out.append(status)
    measured = [s.sec_per_iter for s in out if s.sec_per_iter]
    mean_spi = sum(measured) / len(measured) if measured else None
    for s in out:
        if s.state in (PENDING, NOT_STARTED, WAITING) and s.target and mean_spi is not None:
            s.eta_s = s.target * mean_spi  # not measured yet: the mean pace of the trials that are
    return ExperimentStatus(str(folder), out, spec.resources.gpus, alive)


def ablation_status(spec: AblationSpec | str | Path, *, storage: str = DEFAULT_STORAGE) -> ExperimentStatus:
    """Where the experiment of ``spec`` in ``storage`` stands, from its folder alone (no Ray, no MLflow).

    Raises:
        PreflightError: the storage is not a local or mounted folder, or holds no experiment of this spec.
    """
    if not isinstance(spec, AblationSpec):
        spec = load_spec(spec)
    trials = expand(spec, validate=False)  # a launch validated them; status lists them (fast for 1,000 trials)
    if "://" in storage:
        raise PreflightError(f"status reads a local or mounted storage folder; {storage} is not one")
    folder = Path(resolve_storage(storage)) / f"{spec.name}-{spec_hash(spec, trials)}"
    if not folder.is_dir():
        raise PreflightError(f"no experiment of spec '{spec.name}' at {folder} (not launched yet, or launched with "
                             f"another --storage)")
    return experiment_status(spec, trials, folder)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_text(spec: AblationSpec, status: ExperimentStatus) -> str:
    rows = [("trial", "state", "iter", spec.metric, "elapsed", "s/iter", "ETA", "note")]
    for t in status.trials:
        it = "-" if t.iteration is None else str(t.iteration)
        rows.append((t.trial, t.state, f"{it}/{t.target if t.target is not None else '?'}",
                     "-" if t.metric is None else f"{t.metric:.2f}", _duration(t.elapsed_s),
                     "-" if t.sec_per_iter is None else f"{t.sec_per_iter:.3f}", _duration(t.eta_s), t.note))
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    lines = [" | ".join([*(c.ljust(w) for c, w in zip(r[:7], widths)), r[7]]).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-----")
    counts: dict[str, int] = {}
    for t in status.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    left = status.gpu_hours_left
    todo = [t.eta_s for t in status.trials if t.state in (RUNNING, PENDING, STOPPED, NOT_STARTED, WAITING)]
    slots = max(1, min(len(todo), spec.max_concurrent or len(todo) or 1))
    wall = f"; about {_duration(sum(todo) / slots)} of trial time left on {slots} slot{'s' if slots > 1 else ''}" \
        if todo and all(x is not None for x in todo) else ""
    lines += ["", ", ".join(f"{n} {state}" for state, n in counts.items())
              + f"; launch {'running' if status.launch_alive else 'not running'}{wall}",
              f"GPU-hours ({status.gpus_per_trial:g} GPU per trial): spent {status.gpu_hours_spent:.2f}, "
              f"remaining {'unknown' if left is None else f'{left:.2f}'}",
              f"experiment {status.path}"]
    return "\n".join(lines) + "\n"
