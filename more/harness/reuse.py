"""Reuse on launch: find earlier results of a spec's trials by content key, and decide what still has to run.

Earlier results come from two places, both searched whatever spec or experiment folder produced them, and only for
the config keys of the spec's trials (so the cost of a lookup follows the spec, not the history of the store):

- the storage: the ``<storage>/<experiment>/<trial>/run/`` folders indexed under those keys
  (:mod:`more.harness.results_index`), each holding ``identity.json`` (written by the trainable when it starts) and
  ``outcome.json`` (written by the driver once Tune has the trial's final state);
- the MLflow store: the trial runs tagged ``more.config_key`` with one of those keys, one tag-filtered search per key
  (MLflow's filter has no ``IN`` for tags; several at a time on a tracking server), for the keys the storage has
  no complete result of (:func:`more.harness.growth.earlier_results`); FINISHED without ``more.error``, or FAILED.

:func:`plan` gives each trial one action: ``reuse`` (a finished result at the same key and at least the asked
iterations, or one that the spec's scheduler or stop rule ended early: that is its result), ``continue`` (finished
at fewer iterations with a checkpoint left: train on from it), ``run``, or ``failed`` (an earlier attempt failed
and ``--no-retry-failed`` keeps that outcome). A failed or diverged result is never reused as a result. A launch
marks ``wait`` the trials another live launch is training (:mod:`more.harness.claims`). The plan is written to the
experiment folder (``plan.json``) so ``--resume``, ``status`` and the results table see the same decisions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from more.harness.identity import IDENTITY_FILE, TrialIdentity

OUTCOME_FILE = "outcome.json"
PLAN_FILE = "plan.json"
RUN, REUSE, CONTINUE, KEEP_FAILED, WAIT = "run", "reuse", "continue", "failed", "wait"
FINISHED, FAILED = "FINISHED", "FAILED"
STOPPED_EARLY_TAG = "more.stopped_early"  # on a trial run the scheduler or a stop rule ended before its last iteration
MLFLOW_LOOKUPS = 8  # tag-filtered searches in flight at once


@dataclass
class Prior:
    """One earlier result of a content key.

    Attributes:
        key, config_key, code: its identity (see :class:`~more.harness.identity.TrialIdentity`).
        status: FINISHED or FAILED.
        iterations: the last iteration it reported.
        metrics: its last report (numbers only).
        experiment: the experiment folder (or MLflow experiment) it ran in; ``trial``: its trial name there.
        run_dir: its run folder ("" when known only from MLflow); ``run_id``: its MLflow run ("" when untracked).
        checkpoint: its newest checkpoint folder ("" when none is left).
        error: why it failed.
        stopped_early: what ended it before its last iteration ("scheduler" or "stop rule"; "" when it ran to its
            end): such a result is complete at the iterations it has.
    """

    key: str
    config_key: str
    code: str
    status: str
    iterations: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    experiment: str = ""
    trial: str = ""
    run_dir: str = ""
    run_id: str = ""
    checkpoint: str = ""
    error: str = ""
    stopped_early: str = ""

    @property
    def origin(self) -> str:
        where = f"{self.experiment}/{self.trial}" if self.experiment else self.trial
        return f"{where} (MLflow run {self.run_id})" if self.run_id and not self.run_dir else where


@dataclass
class Decision:
    trial: str
    action: str  # run | reuse | continue | failed | wait
    prior: Prior | None = None
    why: str = ""


# ------------------------------------------------------------------------------------------------- finding


def _numbers(data: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def newest_checkpoint(run_dir: str | os.PathLike) -> str:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return ""
    done = sorted(p for p in root.iterdir() if p.name.startswith("iter_") and (p / "checkpoint.pt").is_file())
    return str(done[-1]) if done else ""


def prior_from_run_dir(run_dir: Path) -> Prior | None:
    """The result recorded in a run folder (``identity.json`` + ``outcome.json``), else None."""
    try:
        ident = json.loads((run_dir / IDENTITY_FILE).read_text())
        result = json.loads((run_dir / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None  # not ended (or its driver died before recording it): never a result
    return Prior(
        key=ident.get("key", ""), config_key=ident.get("config_key", ""), code=ident.get("code", ""),
        status=result.get("status", FAILED), iterations=result.get("iterations"),
        metrics=_numbers(result.get("metrics") or {}), experiment=run_dir.parent.parent.name,
        trial=run_dir.parent.name, run_dir=str(run_dir), run_id=result.get("run_id", ""),
        checkpoint=newest_checkpoint(run_dir), error=result.get("error", ""),
        stopped_early=result.get("stopped_early", ""),
    )


def local_priors(storage: str, config_keys: list[str] | None = None) -> list[Prior]:
    """Results recorded in a local storage folder (remote storage is searched through MLflow only): those of
    ``config_keys`` through the index, or (None) every run folder."""
    if "://" in storage or not Path(storage).is_dir():
        return []
    if config_keys is None:
        run_dirs = sorted(p.parent for p in Path(storage).glob(f"*/*/run/{IDENTITY_FILE}"))
    else:
        from more.harness.results_index import run_dirs as indexed

        run_dirs = indexed(storage, config_keys, identity_file=IDENTITY_FILE, outcome_file=OUTCOME_FILE)
    return [p for p in map(prior_from_run_dir, run_dirs) if p is not None]


def _trial_runs_of(client: Any, experiment_ids: list[str], config_key: str) -> list[Any]:
    where = f"tags.`more.config_key` = '{config_key}'"
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=where, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: Any) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def mlflow_priors(tracking_uri: str | None, config_keys: list[str]) -> list[Prior]:
    """Trial runs tagged with one of ``config_keys`` in any experiment of the store; [] when it cannot be read."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [k for k in dict.fromkeys(config_keys) if k and "'" not in k]
    if not keys:
        return []
    try:
        from more.tracking.store import make_client, resolve_tracking_uri, sqlite_path

        uri = resolve_tracking_uri(tracking_uri)
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            return []  # reading must not create a store
        client = make_client(uri)
        ids = _experiment_ids(client)
        if not ids:
            return []
        # a tracking server answers several searches at once; a database read in this process is bound by its GIL
        workers = 1 if db is not None else min(MLFLOW_LOOKUPS, len(keys))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = [run for found in pool.map(lambda key: _trial_runs_of(client, ids, key), keys) for run in found]
    except Exception as exc:  # noqa: BLE001 -- an unreadable store only means fewer matches
        print(f"note: MLflow not searched for earlier results: {type(exc).__name__}: {exc}")
        return []
    out = []
    for run in runs:
        tags = run.data.tags
        if tags.get("more.kind") != "trial" or not tags.get("more.content_key") \
                or run.info.status not in ("FINISHED", "FAILED"):
            continue
        failed = run.info.status == "FAILED" or "more.error" in tags
        run_dir = tags.get("more.run_dir", "")
        out.append(Prior(
            key=tags["more.content_key"], config_key=tags.get("more.config_key", ""), code=tags.get("more.code_id", ""),
            status=FAILED if failed else FINISHED, iterations=int(float(tags.get("more.logged_through", "0"))) or None,
            metrics=dict(run.data.metrics), experiment=tags.get("more.experiment_folder", ""),
            trial=run.info.run_name or "", run_dir=run_dir if run_dir and Path(run_dir).is_dir() else "",
            run_id=run.info.run_id, checkpoint=newest_checkpoint(run_dir) if run_dir else "",
            error=tags.get("more.error", "")[:300], stopped_early=tags.get(STOPPED_EARLY_TAG, ""),
        ))
    return out


def merge_priors(local: list[Prior], tracked: list[Prior]) -> list[Prior]:
    """Local results with their MLflow run ids filled in, then tracked runs whose folders are not local."""
    by_dir = {p.run_dir: p for p in local}
    extra = []
    for p in tracked:
        twin = by_dir.get(p.run_dir) if p.run_dir else None
        if twin is not None:
            twin.run_id = twin.run_id or p.run_id
        elif not any(q.run_id == p.run_id for q in local):
            extra.append(p)
    return local + extra


def find_priors(storage: str, tracking_uri: str | None, config_keys: list[str], *,
                tracking: bool = True) -> list[Prior]:
    """Earlier results of ``config_keys`` in the storage and (with ``tracking``) the MLflow store."""
    return merge_priors(local_priors(storage, config_keys),
                        mlflow_priors(tracking_uri, config_keys) if tracking else [])


# ------------------------------------------------------------------------------------------------ deciding


def plan(names: list[str], identities: dict[str, TrialIdentity], priors: list[Prior], *, rerun: bool = False,
         across_commits: bool = False, retry_failed: bool = True) -> list[Decision]:
    """One decision per trial name (see the module docstring)."""
    out = []
    for name in names:
        ident = identities[name]
        if rerun:
            out.append(Decision(name, RUN, None, "--rerun"))
            continue
        same = [p for p in priors if p.key == ident.key]
        if across_commits:
            same += [p for p in priors if p.config_key == ident.config_key and p.key != ident.key]
        done = [p for p in same if p.status == FINISHED]
        full = [p for p in done if (p.iterations or 0) >= ident.target_iters or p.stopped_early]
        if full:
            # the same code first, then the one that ran longest; a tie keeps the first found
            best = max(full, key=lambda p: (p.key == ident.key, p.iterations or 0))
            why = f"finished at iteration {best.iterations}"
            if best.stopped_early and (best.iterations or 0) < ident.target_iters:
                why += f" (stopped early by the {best.stopped_early}: its complete result)"
            out.append(Decision(name, REUSE, best, why))
            continue
        resumable = [p for p in done if p.checkpoint]
        if resumable:
            best = max(resumable, key=lambda p: (p.key == ident.key, p.iterations or 0))
            out.append(Decision(name, CONTINUE, best, f"finished at iteration {best.iterations} of "
                                                      f"{ident.target_iters}: continues from {best.checkpoint}"))
            continue
        failed = [p for p in same if p.status == FAILED]
        if failed and not retry_failed:
            out.append(Decision(name, KEEP_FAILED, failed[-1], f"failed before ({failed[-1].error or 'no error'}); "
                                                               f"--no-retry-failed"))
            continue
        why = "failed before: runs again" if failed else "no earlier result"
        if not failed and not across_commits and any(p.config_key == ident.config_key for p in priors):
            why = "earlier results exist at other code (--reuse-across-commits would take them)"
        out.append(Decision(name, RUN, None, why))
    return out


def summary_line(decisions: list[Decision]) -> str:
    n = {a: sum(1 for d in decisions if d.action == a) for a in (RUN, REUSE, CONTINUE, KEEP_FAILED, WAIT)}
    text = f"{n[RUN] + n[CONTINUE]} to run, {n[REUSE]} reused"
    if n[CONTINUE]:
        text += f" ({n[CONTINUE]} of those to run continue an earlier result from its checkpoint)"
    if n[KEEP_FAILED]:
        text += f", {n[KEEP_FAILED]} kept as failed (--no-retry-failed)"
    if n[WAIT]:
        text += f", {n[WAIT]} being trained by another launch (waited for, then reported)"
    return text


def decisions_text(decisions: list[Decision]) -> str:
    rows = [("trial", "action", "why / from")]
    for d in decisions:
        origin = f"{d.prior.origin} @ {d.prior.code[:12]}: " if d.prior else ""
        rows.append((d.trial, d.action, origin + d.why))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0].ljust(widths[0])} | {r[1].ljust(widths[1])} | {r[2]}" for r in rows) + "\n"


def plan_text(decisions: list[Decision]) -> str:
    """The decisions table and the "N to run, M reused" line, as launches and dry runs print them."""
    return decisions_text(decisions) + summary_line(decisions)


# ---------------------------------------------------------------------------------------------- persisting


def plan_json(decisions: list[Decision], identities: dict[str, TrialIdentity]) -> str:
    return json.dumps({"trials": [{"trial": d.trial, "action": d.action, "why": d.why,
                                   "prior": asdict(d.prior) if d.prior else None,
                                   "identity": identities[d.trial].as_dict()} for d in decisions]}, indent=1) + "\n"


def read_plan(text: str | None) -> tuple[list[Decision], dict[str, TrialIdentity]]:
    if not text:
        return [], {}
    entries = json.loads(text)["trials"]
    decisions = [Decision(e["trial"], e["action"], Prior(**e["prior"]) if e["prior"] else None, e.get("why", ""))
                 for e in entries]
    return decisions, {e["trial"]: TrialIdentity(**e["identity"]) for e in entries}
