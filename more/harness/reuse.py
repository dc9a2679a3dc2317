"""Reuse on launch: find earlier results of a spec's trials by content key, and decide what still has to run.

Earlier results come from two places, both searched whatever spec or experiment folder produced them:

- the storage: every ``<storage>/<experiment>/<trial>/run/`` holding ``identity.json`` (written by the trainable
  when it starts) and ``outcome.json`` (written by the driver once Tune has the trial's final state);
- the MLflow store: every trial run tagged ``more.content_key`` (FINISHED without ``more.error``, or FAILED).

:func:`plan` gives each trial one action: ``reuse`` (a finished result at the same key and at least the asked
iterations), ``continue`` (finished at fewer iterations with a checkpoint left: train on from it), ``run``, or
``failed`` (an earlier attempt failed and ``--no-retry-failed`` keeps that outcome). A failed or diverged result
is never reused as a result. The plan is written to the experiment folder (``plan.json``) so ``--resume``,
``status`` and the results table see the same decisions.
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
RUN, REUSE, CONTINUE, KEEP_FAILED = "run", "reuse", "continue", "failed"
FINISHED, FAILED = "FINISHED", "FAILED"


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

    @property
    def origin(self) -> str:
        where = f"{self.experiment}/{self.trial}" if self.experiment else self.trial
        return f"{where} (MLflow run {self.run_id})" if self.run_id and not self.run_dir else where


@dataclass
class Decision:
    trial: str
    action: str  # run | reuse | continue | failed
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


def local_priors(storage: str) -> list[Prior]:
    """Results recorded in a local storage folder (remote storage is searched through MLflow only)."""
    if "://" in storage or not Path(storage).is_dir():
        return []
    out = []
    for ident_file in sorted(Path(storage).glob(f"*/*/run/{IDENTITY_FILE}")):
        run_dir = ident_file.parent
        outcome = run_dir / OUTCOME_FILE
        if not outcome.is_file():
            continue  # not ended (or its driver died before recording it): never a result
        try:
            ident, result = json.loads(ident_file.read_text()), json.loads(outcome.read_text())
        except (OSError, ValueError):
            continue
        out.append(Prior(
            key=ident.get("key", ""), config_key=ident.get("config_key", ""), code=ident.get("code", ""),
            status=result.get("status", FAILED), iterations=result.get("iterations"),
            metrics=_numbers(result.get("metrics") or {}), experiment=run_dir.parent.parent.name,
            trial=run_dir.parent.name, run_dir=str(run_dir), run_id=result.get("run_id", ""),
            checkpoint=newest_checkpoint(run_dir), error=result.get("error", ""),
        ))
    return out


def mlflow_priors(tracking_uri: str | None) -> list[Prior]:
    """Trial runs tagged with a content key in any experiment of the store; [] when it cannot be read."""
    try:
        from more.tracking.store import make_client, resolve_tracking_uri, sqlite_path

        uri = resolve_tracking_uri(tracking_uri)
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            return []  # reading must not create a store
        client = make_client(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs, token = [], None
        while ids:
            page = client.search_runs(ids, filter_string="tags.`more.kind` = 'trial'", max_results=1000,
                                      page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except Exception as exc:  # noqa: BLE001 -- an unreadable store only means fewer matches
        print(f"note: MLflow not searched for earlier results: {type(exc).__name__}: {exc}")
        return []
    out = []
    for run in runs:
        tags = run.data.tags
        if not tags.get("more.content_key") or run.info.status not in ("FINISHED", "FAILED"):
            continue
        failed = run.info.status == "FAILED" or "more.error" in tags
        run_dir = tags.get("more.run_dir", "")
        out.append(Prior(
            key=tags["more.content_key"], config_key=tags.get("more.config_key", ""), code=tags.get("more.code_id", ""),
            status=FAILED if failed else FINISHED, iterations=int(float(tags.get("more.logged_through", "0"))) or None,
            metrics=dict(run.data.metrics), experiment=tags.get("more.experiment_folder", ""),
            trial=run.info.run_name or "", run_dir=run_dir if run_dir and Path(run_dir).is_dir() else "",
            run_id=run.info.run_id, checkpoint=newest_checkpoint(run_dir) if run_dir else "",
            error=tags.get("more.error", "")[:300],
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


def find_priors(storage: str, tracking_uri: str | None, *, tracking: bool = True) -> list[Prior]:
    return merge_priors(local_priors(storage), mlflow_priors(tracking_uri) if tracking else [])


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
        full = [p for p in done if (p.iterations or 0) >= ident.target_iters]
        if full:
            # the same code first, then the one that ran longest; a tie keeps the first found
            best = max(full, key=lambda p: (p.key == ident.key, p.iterations or 0))
            out.append(Decision(name, REUSE, best, f"finished at iteration {best.iterations}"))
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
    n = {a: sum(1 for d in decisions if d.action == a) for a in (RUN, REUSE, CONTINUE, KEEP_FAILED)}
    text = f"{n[RUN] + n[CONTINUE]} to run, {n[REUSE]} reused"
    if n[CONTINUE]:
        text += f" ({n[CONTINUE]} of those to run continue an earlier result from its checkpoint)"
    if n[KEEP_FAILED]:
        text += f", {n[KEEP_FAILED]} kept as failed (--no-retry-failed)"
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
