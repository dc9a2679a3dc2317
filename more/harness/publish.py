"""The end of a launch: the results table written next to the experiment, the failures summarized, the outcomes
recorded for later launches, and the MLflow runs closed, linked and tagged.

:func:`publish` writes ``results.md/.csv/.json`` and returns the launch's exit status (0 all trials finished, 1
otherwise); :func:`close_tracking` ends the launch's MLflow parent run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from more.harness.results import FAILED, TrialRow, format_table, to_csv, to_json
from more.harness.spec import AblationSpec

Say = Callable[[str], None]


def publish(spec: AblationSpec, digest: str, store: Any, rows: list[TrialRow], *, say: Say, warn: Say) -> int:
    """Print the results table, write results.md/.csv/.json to the experiment folder, summarize failures."""
    table = format_table(rows, spec.metric)
    say("")
    say(table.rstrip("\n"))
    for name, text in (("results.md", f"# {spec.name} ({digest})\n\n{table}"), ("results.csv", to_csv(rows)),
                       ("results.json", to_json(spec, digest, rows))):
        store.write_text(name, text)
    say(f"\nresults written to {store.path}/results.{{md,csv,json}}")
    failed = [r for r in rows if r.status == FAILED]
    incomplete = [r for r in rows if r.status not in (FAILED, "TERMINATED")]
    if not failed and not incomplete:
        return 0
    warn(f"{len(failed)} of {len(rows)} trials failed" + (f", {len(incomplete)} did not finish" if incomplete
                                                          else "") + ":")
    for r in failed + incomplete:
        warn(f"  {r.trial}: {r.error or r.status}")
    warn("--resume runs them again from their last checkpoints")
    return 1


def close_tracking(tracker: Any, spec: AblationSpec, digest: str, rows: list[TrialRow], decisions: list,
                   identities: dict, runs: list[Any], code: int, *, say: Say) -> str:
    """End the child runs Tune finished but nobody ended, link the reused runs, tag the early-stopped ones, log the
    results table and end the parent run. Returns the line naming the MLflow runs page ("" when untracked)."""
    if tracker is None or not tracker.enabled:
        return ""
    from more.harness.growth import link_reused, tag_early_stops
    from more.tracking import trial_key

    run_ids = {r.info.run_name: r.info.run_id for r in runs}
    tracker.close_orphans({trial_key(digest, r.trial): (r.status, r.error) for r in rows if not r.origin}, runs)
    linked = link_reused(tracker, decisions, digest)
    if linked:
        say(f"linked {linked} reused MLflow runs to the parent run {tracker.run_id}")
    tag_early_stops(tracker, spec, rows, identities, run_ids)
    tracker.log_results(markdown=format_table(rows, spec.metric), csv=to_csv(rows),
                        json_text=to_json(spec, digest, rows))
    tracker.finish("FINISHED" if code == 0 else "FAILED")
    return tracker.runs_page()
