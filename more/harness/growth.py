"""Growing an ablation: the launch-side glue between the reuse plan (:mod:`more.harness.reuse`), the Tuner, the
results table and MLflow.

- :func:`make_plan`: the identities of the spec's trials and a decision for each (reuse / continue / run).
- :func:`tune_extras`: the identity (and, to continue, the earlier checkpoint) each launched trial receives.
- :func:`all_rows`: the results table in spec order: Tune's rows for the trials this experiment ran, the earlier
  results for the reused ones (marked with their origin), every row with its content key and code identity.
- :func:`mark_waiting` / :func:`collect_waited`: trials another live launch trains are waited for, then reported with
  the result that launch left.
- :func:`write_outcomes`: ``outcome.json`` in each run folder once Tune has the final state (what later launches
  find and reuse; a trial the scheduler or a stop rule ended early is marked so: its result is complete), indexed
  by config key, and :func:`link_reused`: tags that link reused MLflow runs to this launch's parent run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from more.harness.identity import TrialIdentity, spec_identities
from more.harness.results import FAILED, FINISHED, TrialRow, not_started_row
from more.harness.reuse import (
    CONTINUE,
    KEEP_FAILED,
    OUTCOME_FILE,
    PLAN_FILE,
    REUSE,
    RUN,
    STOPPED_EARLY_TAG,
    WAIT,
    Decision,
    Prior,
    find_priors,
    plan,
    plan_json,
    read_plan,
)
from more.harness.reuse import FAILED as PRIOR_FAILED
from more.harness.reuse import FINISHED as PRIOR_FINISHED
from more.harness.spec import AblationSpec, Trial
from more.tracking.runs import REUSED_BY_TAG


def make_plan(spec: AblationSpec, trials: list[Trial], *, storage: str, experiment: str, tracking_uri: str | None,
              tracking: bool, rerun: bool = False, across_commits: bool = False,
              retry_failed: bool = True) -> tuple[list[Decision], dict[str, TrialIdentity]]:
    """Decisions for the spec's trials from every earlier result but those of ``experiment`` itself."""
    identities = spec_identities(spec, trials)
    priors = [] if rerun else earlier_results(identities, storage=storage, tracking_uri=tracking_uri,
                                              tracking=tracking, experiment=experiment)
    decisions = plan([t.name for t in trials], identities, priors, rerun=rerun, across_commits=across_commits,
                     retry_failed=retry_failed)
    return decisions, identities


def earlier_results(identities: dict[str, TrialIdentity], *, storage: str, tracking_uri: str | None,
                    tracking: bool, experiment: str) -> list[Prior]:
    """The earlier results of the trials' config keys, outside ``experiment``: the storage's first (an index
    lookup), then MLflow for the keys the storage does not already answer with a complete result at the same code
    (each MLflow lookup is a tag search, so a grown spec whose trials ran in this storage costs none)."""
    from more.harness.reuse import local_priors, merge_priors, mlflow_priors

    keys = list(dict.fromkeys(ident.config_key for ident in identities.values()))
    local = [p for p in local_priors(storage, keys) if p.experiment != experiment]
    done = {p.key: p for p in local if p.status == PRIOR_FINISHED}
    settled = {ident.config_key for ident in identities.values() if (p := done.get(ident.key)) is not None
               and ((p.iterations or 0) >= ident.target_iters or p.stopped_early)}
    tracked = mlflow_priors(tracking_uri, [k for k in keys if k not in settled]) if tracking else []
    return merge_priors(local, [p for p in tracked if p.experiment != experiment])


def save_plan(store: Any, decisions: list[Decision], identities: dict[str, TrialIdentity]) -> None:
    store.write_text(PLAN_FILE, plan_json(decisions, identities))


def load_plan(store: Any) -> tuple[list[Decision], dict[str, TrialIdentity]]:
    return read_plan(store.read_text(PLAN_FILE))


def launched(trials: list[Trial], decisions: list[Decision]) -> list[Trial]:
    """The trials this launch trains (run or continue), in spec order; all of them when there is no plan."""
    if not decisions:
        return list(trials)
    todo = {d.trial for d in decisions if d.action in (RUN, CONTINUE)}
    return [t for t in trials if t.name in todo]


def tune_extras(decisions: list[Decision], identities: dict[str, TrialIdentity]) -> dict[str, dict[str, Any]]:
    from more.harness.tune_runner import CONTINUE_KEY, IDENTITY_KEY

    out: dict[str, dict[str, Any]] = {}
    for d in decisions:
        extra: dict[str, Any] = {IDENTITY_KEY: identities[d.trial].as_dict()}
        if d.action == CONTINUE and d.prior is not None:
            extra[CONTINUE_KEY] = {"checkpoint": d.prior.checkpoint, "run_dir": d.prior.run_dir,
                                   "origin": d.prior.origin, "iterations": d.prior.iterations}
        out[d.trial] = extra
    return out


def mark_waiting(decisions: list[Decision], held: dict[str, dict[str, Any]]) -> list[Decision]:
    """The decisions with each trial in ``held`` ({trial: owner of its claim}) waited for instead of run."""
    from more.harness.claims import owner_text

    return [Decision(d.trial, WAIT, None, f"being trained by another launch, {owner_text(held[d.trial])}")
            if d.trial in held else d for d in decisions]


def collect_waited(decisions: list[Decision], identities: dict[str, TrialIdentity], *, storage: str,
                   tracking_uri: str | None, tracking: bool, experiment: str) -> list[Decision]:
    """Once the launches training the waited-for trials have ended: each is reused when they left a finished result,
    kept as failed when that failed, and stays waited for (its row says so) when they left none."""
    keys = [identities[d.trial].config_key for d in decisions if d.action == WAIT and d.trial in identities]
    priors = find_priors(storage, tracking_uri, keys, tracking=tracking) if keys else []
    out = []
    for d in decisions:
        ident = identities.get(d.trial)
        if d.action != WAIT or ident is None:
            out.append(d)
            continue
        same = [p for p in priors if p.key == ident.key and p.experiment != experiment]
        done = [p for p in same if p.status == PRIOR_FINISHED]
        if done:
            best = max(done, key=lambda p: p.iterations or 0)
            out.append(Decision(d.trial, REUSE, best, f"trained by another launch meanwhile: finished at iteration "
                                                      f"{best.iterations}"))
        elif same:
            out.append(Decision(d.trial, KEEP_FAILED, same[-1], f"the launch that trained it failed: "
                                                                f"{same[-1].error or 'no error'}"))
        else:
            out.append(Decision(d.trial, WAIT, None, f"{d.why}; that launch ended without a result for it: remove "
                                                     f"{storage}/{experiment} and launch again (its finished trials "
                                                     f"are reused)"))
    return out


def prior_row(trial: Trial, prior: Prior, metric: str, *, failed: bool = False) -> TrialRow:
    value = prior.metrics.get(metric)
    return TrialRow(
        trial=trial.name, condition=trial.condition, sweep=dict(trial.sweep), seed=trial.seed,
        status=FAILED if failed else FINISHED, metric=float(value) if value is not None else None,
        iterations=prior.iterations, node_ip="", error=prior.error if failed else "",
        path=str(Path(prior.run_dir).parent) if prior.run_dir else "", run_dir=prior.run_dir,
        metrics=dict(prior.metrics), content_key=prior.key, code=prior.code, origin=prior.origin,
    )


def all_rows(spec: AblationSpec, trials: list[Trial], store: Any, decisions: list[Decision],
             identities: dict[str, TrialIdentity]) -> list[TrialRow]:
    """The results table of the whole spec (see the module docstring)."""
    from more.harness.results import load_rows
    from more.harness.tune_runner import can_restore

    ran = launched(trials, decisions)
    by_name: dict[str, TrialRow] = {}
    if ran:
        if can_restore(store):
            by_name.update({r.trial: r for r in load_rows(spec, ran, store.path)})
        else:
            by_name.update({t.name: not_started_row(t) for t in ran})
    chosen = {d.trial: d for d in decisions}
    rows = []
    for t in trials:
        d = chosen.get(t.name)
        if d is not None and d.action in (REUSE, KEEP_FAILED) and d.prior is not None:
            row = prior_row(t, d.prior, spec.metric, failed=d.action == KEEP_FAILED)
        elif d is not None and d.action == WAIT:  # another launch trained it and left no result (yet)
            row = not_started_row(t)
            row.error = d.why
        else:
            row = by_name[t.name]
            ident = identities.get(t.name)
            if ident is not None:  # a continued trial is trained here: continued_from.json in its run folder
                row.content_key, row.code = ident.key, ident.code
        rows.append(row)
    return rows


def early_stop(spec: AblationSpec, row: TrialRow, ident: TrialIdentity | None) -> str:
    """What ended a finished trial before its last iteration: "stop rule" (a metric threshold it reached),
    "scheduler" (ASHA), or "" when it ran to its end."""
    if row.status != FINISHED or ident is None or (row.iterations or 0) >= ident.target_iters:
        return ""
    from more.harness.spec import LOWER_IS_BETTER

    lower = set(LOWER_IS_BETTER) | ({spec.metric} if spec.mode == "min" else set())
    for key, threshold in spec.stop.items():
        value = row.metrics.get(key)
        if key != "iter" and value is not None and (value <= threshold if key in lower else value >= threshold):
            return "stop rule"
    return "scheduler" if spec.scheduler else ""


def write_outcomes(rows: list[TrialRow], *, run_ids: dict[str, str] | None = None, spec: AblationSpec | None = None,
                   identities: dict[str, TrialIdentity] | None = None, storage: str | None = None) -> None:
    """``outcome.json`` (status, iterations, last metrics, error, what stopped it early) in the run folder of each
    trial this launch ran to an end, indexed under its config key in ``storage``; reused rows are left alone (their
    outcome lives in their own folder)."""
    from more.harness import results_index

    identities = identities or {}
    for r in rows:
        if r.origin or not r.run_dir or r.status not in (FINISHED, FAILED):
            continue
        run_dir = Path(r.run_dir)
        if not run_dir.is_dir():
            continue
        ident = identities.get(r.trial)
        data = {"status": PRIOR_FINISHED if r.status == FINISHED else PRIOR_FAILED, "iterations": r.iterations,
                "metrics": r.metrics, "error": r.error, "finished": time.time(),
                "run_id": (run_ids or {}).get(r.trial, ""),
                "stopped_early": early_stop(spec, r, ident) if spec is not None else ""}
        tmp = run_dir / f"{OUTCOME_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, run_dir / OUTCOME_FILE)
        if storage and "://" not in storage and ident is not None:
            results_index.add(storage, ident.config_key, run_dir)


def tag_early_stops(launch: Any, spec: AblationSpec, rows: list[TrialRow], identities: dict[str, TrialIdentity],
                    run_ids: dict[str, str]) -> None:
    """Tag the MLflow runs of trials that the scheduler or a stop rule ended early (``more.stopped_early``), so a
    launch elsewhere that finds them in MLflow reuses them as complete results."""
    if launch is None or not launch.enabled:
        return
    for r in rows:
        reason = "" if r.origin else early_stop(spec, r, identities.get(r.trial))
        if reason and run_ids.get(r.trial):
            launch._call("tagging an early-stopped run", launch.client.set_tag, run_ids[r.trial], STOPPED_EARLY_TAG,
                         reason)


def link_reused(launch: Any, decisions: list[Decision], digest: str) -> int:
    """Tag each reused MLflow run with ``more.reused_by.<spec hash> = {"parent": <parent run id>, "trial": <name>}``:
    the launch lists its reused trials without a copy of their runs. Returns how many runs were linked."""
    if launch is None or not launch.enabled:
        return 0
    chosen = [(d.trial, d.prior) for d in decisions if d.action == REUSE and d.prior is not None and d.prior.run_id]
    ids = [prior.run_id for _, prior in chosen]
    for trial, prior in chosen:
        # the trial's name in this spec: a reused run may come from a spec whose condition was named differently
        value = json.dumps({"parent": launch.run_id, "trial": trial})
        launch._call("linking a reused run", launch.client.set_tag, prior.run_id, REUSED_BY_TAG + digest, value)
    if ids:
        launch._call("tagging the launch", launch.client.set_tag, launch.run_id, "more.reused_trials", str(len(ids)))
    return len(ids)
