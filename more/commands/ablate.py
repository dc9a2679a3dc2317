"""``python -m more ablate SPEC``: run an ablation spec (``ablations/*.yaml``) as Ray Tune trials.

Every trial is validated before anything launches. ``--dry-run`` prints the trial table and the GPU-hour estimate.
Otherwise the trials run on a private Ray started on a loopback address (default) or on the cluster at
``--address``, in ``<storage>/<spec name>-<spec hash>``; the results table is printed and written there as
Markdown, CSV and JSON. The exit status is 0 when every trial finished, 1 when some failed, 2 for a bad spec.

Trials that already finished anywhere in the storage or the MLflow store with the same content key are reused, not
run again (:mod:`more.harness.reuse`; ``--rerun``, ``--reuse-across-commits``, ``--no-retry-failed``); the dry run
says which. A launch whose trials are all reused starts no Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from more.harness.reuse import plan_text
from more.harness.spec import AblationSpec, Trial, expand, load_spec, spec_hash

if TYPE_CHECKING:
    from more.harness.results import TrialRow
    from more.harness.tune_runner import ExperimentStore

DEFAULT_STORAGE = "work/ray_results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="an ablation spec, e.g. ablations/table3_synthetic.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials and the GPU-hour estimate; launch nothing")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted experiment of this spec (unfinished and failed trials)")
    parser.add_argument("--address", help="HOST:PORT of a running Ray cluster, or 'auto' on one of its nodes "
                                          "(default: start a private Ray on 127.0.0.2)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"experiment storage: a path (made absolute) or a URI such as s3://bucket/ray "
                             f"(default: {DEFAULT_STORAGE})")
    parser.add_argument("--max-concurrent", type=int, help="run at most N trials at once (overrides the spec)")
    parser.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (local Ray, on 127.0.0.1)")
    parser.add_argument("--tracking-uri", help="MLflow store: a sqlite path or URL, or http://server (default: "
                                               "$MLFLOW_TRACKING_URI, else work/mlflow/mlflow.db)")
    parser.add_argument("--no-tracking", action="store_true", help="do not track the trials in MLflow")
    parser.add_argument("--rerun", action="store_true",
                        help="run every trial, ignoring earlier results with the same content key")
    parser.add_argument("--reuse-across-commits", action="store_true",
                        help="also reuse results of other code versions (the results table lists the commits)")
    parser.add_argument("--no-retry-failed", action="store_true",
                        help="keep trials that failed before as failed instead of running them again")


def run(args: argparse.Namespace) -> int:
    from more.commands.preflight import ablate_checks

    spec = load_spec(args.spec)  # SpecError -> "spec error: ..." and exit 2 (more.__main__)
    trials = expand(spec)
    checked = ablate_checks(spec, trials, args)  # before Ray starts or anything is written
    digest = spec_hash(spec, trials)
    if args.dry_run:
        decisions, _ = _plan(spec, trials, digest, args)
        print(dry_run_text(spec, trials, digest, checks=checked.text(), plan=plan_text(decisions)), end="")
        return 0
    return launch(spec, trials, digest, args)


def dry_run_text(spec: AblationSpec, trials: list[Trial], digest: str, *, checks: str = "", plan: str = "") -> str:
    """The trial table (name, condition, overrides, seed), the count, the GPU-hour estimate, what the preflight
    checked (``checks``) and what a launch would reuse and run (``plan``)."""
    header = [
        f"spec {spec.name} (hash {digest}): {spec.source}",
        "experiment overrides: " + (_overrides_text(spec.overrides) or "-"),
        f"metric {spec.metric} ({spec.mode}); resources per trial: {_resources_text(spec)}; "
        f"max concurrent: {spec.max_concurrent or 'unlimited'}; "
        f"max failures: {spec.max_failures}",
        f"global batch (processes x train.batch_size x train.accum_steps): {_global_batch_text(spec, trials)}",
        "",
    ]
    rows = [("trial", "condition", "overrides", "seed")]
    for t in trials:
        rows.append((t.name, t.condition, _overrides_text({**spec.conditions[t.condition], **t.sweep}) or "-",
                     str(t.seed)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    table.insert(1, "-+-".join("-" * w for w in widths))
    if spec.gpu_hours_per_trial is not None:
        estimate = f"{len(trials) * spec.gpu_hours_per_trial:g} GPU-hours ({spec.gpu_hours_per_trial:g} per trial)"
    elif spec.resources.gpus == 0:
        estimate = "0 GPU-hours (CPU-only trials)"
    else:
        estimate = "unknown (set gpu_hours_per_trial in the spec)"
    checked = ["preflight:", checks.rstrip("\n")] if checks else []
    footer = ["", f"{len(trials)} trials; estimated {estimate}", *checked]
    return "\n".join(header + table + footer) + "\n" + (f"\n{plan}\n\n" if plan else "") + "dry run: nothing launched\n"


def _plan(spec: AblationSpec, trials: list[Trial], digest: str, args: argparse.Namespace) -> tuple[list, dict]:
    """The reuse decisions and the trials' identities (:func:`more.harness.growth.make_plan`)."""
    from more.harness.growth import make_plan

    return make_plan(spec, trials, storage=resolve_storage(args.storage), experiment=f"{spec.name}-{digest}",
                     tracking_uri=args.tracking_uri, tracking=not args.no_tracking, rerun=args.rerun,
                     across_commits=args.reuse_across_commits, retry_failed=not args.no_retry_failed)


def _resources_text(spec: AblationSpec) -> str:
    res = spec.resources
    if res.workers == 1:
        return f"{res.cpus:g} CPU, {res.gpus:g} GPU"
    return f"{res.workers} DDP workers x ({res.cpus:g} CPU, {res.gpus_per_worker:g} GPU)"


def _global_batch_text(spec: AblationSpec, trials: list[Trial]) -> str:
    from more.config.batch import global_batches_text
    from more.harness.spec import trial_config

    return global_batches_text([trial_config(spec, t) for t in trials], spec.resources.workers)


def _overrides_text(overrides: dict) -> str:
    """``key=value`` pairs with values spelled as in YAML (``false``, ``[1.0, 0.5]``)."""
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items())


def resolve_storage(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def launch(spec: AblationSpec, trials: list[Trial], digest: str, args: argparse.Namespace) -> int:
    """Check the experiment folder against the spec hash, run (or resume) the Tuner, report the results."""
    from more.harness.tune_runner import ExperimentStore, can_restore

    store = ExperimentStore(resolve_storage(args.storage), f"{spec.name}-{digest}")
    stored = (store.read_text("spec_hash") or "").strip()
    if stored and stored != digest:
        print(f"error: refusing: {store.path} holds spec hash {stored}, but the spec now hashes to {digest}",
              file=sys.stderr)
        return 2
    others = [(n, (store.read_text("spec_hash", name=n) or "").strip()) for n in store.siblings(f"{spec.name}-")]
    others = [(n, h) for n, h in others if h]
    exists = can_restore(store)

    if args.resume:
        if not exists:
            if others:
                old = ", ".join(f"{h} ({n})" for n, h in others)
                print(f"refusing to resume: spec '{spec.name}' changed since its first launch: stored hash {old}, "
                      f"current hash {digest}. Restore the old spec to resume it, or run without --resume to start "
                      f"a new experiment.", file=sys.stderr)
            else:
                print(f"nothing to resume: no experiment at {store.path}; run without --resume", file=sys.stderr)
            return 2
        if args.max_concurrent is not None:
            print("note: --max-concurrent is ignored with --resume (the experiment keeps its original setting)")
    elif exists:
        return _report_existing(spec, trials, digest, store)
    else:
        from more.harness.growth import save_plan
        for name, h in others:
            print(f"note: {store.storage}/{name} holds an earlier version of this spec (hash {h}); "
                  f"starting a new experiment {store.name}")
        decisions, identities = _plan(spec, trials, digest, args)
        print(plan_text(decisions), flush=True)
        _write_spec_files(spec, trials, digest, store)
        save_plan(store, decisions, identities)
    return _run(spec, trials, digest, store, args)


def _write_spec_files(spec: AblationSpec, trials: list[Trial], digest: str, store: ExperimentStore) -> None:
    from dataclasses import asdict

    store.write_text("spec.yaml", spec.path.read_text() if spec.path else "")
    store.write_text("trials.json", json.dumps([asdict(t) for t in trials], indent=1) + "\n")
    store.write_text("spec_hash", digest + "\n")


def _report_existing(spec: AblationSpec, trials: list[Trial], digest: str, store: ExperimentStore) -> int:
    from more.harness.growth import all_rows, load_plan
    from more.harness.results import FAILED, FINISHED

    rows = all_rows(spec, trials, store, *load_plan(store))
    unfinished = [r for r in rows if r.status not in (FINISHED, FAILED)]
    if unfinished:
        print(f"{store.path} exists with {len(unfinished)} unfinished trials (the driver stopped early); "
              f"pass --resume to continue it", file=sys.stderr)
        return 2
    print(f"nothing to do: experiment {store.name} (spec hash {digest}) already ran all {len(rows)} trials "
          f"in {store.path}")
    return _publish(spec, digest, store, rows)


def _run(spec: AblationSpec, trials: list[Trial], digest: str, store: ExperimentStore, args: argparse.Namespace) -> int:
    """Claim the trials to train, train them (no Ray at all when every trial is reused), publish the whole table."""
    from more.harness.claims import ClaimSet, owner_text, supported
    from more.harness.growth import all_rows, launched, load_plan

    decisions, identities = load_plan(store)
    todo = launched(trials, decisions)
    claims = ClaimSet(store.storage, experiment=store.name) if supported(store.storage) else None
    if claims is None:
        print(f"note: no trial claims on {store.storage} (an object store has no exclusive create): two launches "
              f"sharing trials there may both run them", file=sys.stderr)
    with claims or contextlib.nullcontext():
        held = {t.name: owner for t in todo if claims is not None and identities.get(t.name)
                and (owner := claims.claim(identities[t.name].key, t.name)) is not None}
        if held:
            for name, owner in held.items():
                print(f"{name}: being trained by another launch, {owner_text(owner)}", file=sys.stderr)
            print("refusing to train trials another launch is training; run again when it has finished (its results "
                  "are then reused)", file=sys.stderr)
            return 2
        if not todo:
            print(f"all {len(trials)} trials reused: no Ray started", flush=True)
            return _finish(spec, digest, store, all_rows(spec, trials, store, decisions, identities), decisions,
                           _launch_tracker(spec, digest, args))
        launch = _train(spec, todo, digest, store, args, decisions, identities)
        if launch is False:  # no node can hold a trial
            return 2
        return _finish(spec, digest, store, all_rows(spec, trials, store, decisions, identities), decisions, launch)


def _finish(spec: AblationSpec, digest: str, store: ExperimentStore, rows: list[TrialRow], decisions: list,
            launch) -> int:  # noqa: ANN001 -- LaunchTracker | None
    """Record outcomes, publish the table, close and link the MLflow runs."""
    from more.harness.growth import link_reused, write_outcomes

    if launch is not None and launch.enabled and store.is_local:  # i21pg: what trials could not send, from run folders
        from more.tracking import reconcile

        reconciled = reconcile(launch.tracking_uri, store.path).text()
        if reconciled:
            print(reconciled, flush=True)
    runs = launch.listed_trial_runs() if launch is not None and launch.enabled else []
    write_outcomes(rows, run_ids={r.info.run_name: r.info.run_id for r in runs})
    code = _publish(spec, digest, store, rows)
    if launch is not None and launch.enabled:
        from more.harness.results import format_table, to_csv, to_json
        from more.tracking import trial_key

        launch.close_orphans({trial_key(digest, r.trial): (r.status, r.error) for r in rows if not r.origin}, runs)
        linked = link_reused(launch, decisions, digest)
        if linked:
            print(f"linked {linked} reused MLflow runs to the parent run {launch.run_id}")
        launch.log_results(markdown=format_table(rows, spec.metric), csv=to_csv(rows),
                           json_text=to_json(spec, digest, rows))
        launch.finish("FINISHED" if code == 0 else "FAILED")
        print(launch.runs_page())
    return code


def _train(spec: AblationSpec, trials: list[Trial], digest: str, store: ExperimentStore, args: argparse.Namespace,
           decisions: list, identities: dict):  # noqa: ANN202 -- LaunchTracker | None
    from more.harness.growth import tune_extras
    from more.harness.local_ray import ray_runtime
    from more.harness.tune_runner import build_tuner, restore_tuner
    from more.preflight import cluster_refusal

    with ray_runtime(args.address, dashboard=args.dashboard) as runtime:
        import ray

        where = f"local Ray on {runtime.address}" if runtime.embedded else f"Ray cluster at {runtime.address}"
        print(f"{'resuming' if args.resume else 'running'} {len(trials)} trials of {spec.name} on {where}; "
              f"experiment {store.path}", flush=True)
        if runtime.dashboard_url:
            print(f"Ray dashboard: http://{runtime.dashboard_url}", flush=True)
        print("nodes: " + ", ".join(_node_text(n) for n in ray.nodes() if n.get("Alive")), flush=True)
        problem = cluster_refusal(spec.resources, embedded=runtime.embedded)
        if problem:
            print(problem, file=sys.stderr)
            return False
        launch = _launch_tracker(spec, digest, args)
        tracking = None
        if launch is not None and launch.enabled:
            print(f"tracking in MLflow: {launch.tracking_uri} (experiment {spec.name}, parent run {launch.run_id})")
            tracking = {"uri": launch.tracking_uri, "parent": launch.run_id, "spec_name": spec.name,
                        "spec_hash": digest, "log_checkpoint": bool((spec.tracking or {}).get("log_checkpoint"))}
        tuner = restore_tuner(spec, store) if args.resume else build_tuner(
            spec, trials, store, max_concurrent=args.max_concurrent, tracking=tracking,
            extras=tune_extras(decisions, identities))
        tuner.fit()
    return launch


def _launch_tracker(spec: AblationSpec, digest: str, args: argparse.Namespace):  # noqa: ANN202 -- LaunchTracker
    """The MLflow parent run of this spec hash (reused on --resume), or None with --no-tracking."""
    if args.no_tracking:
        return None
    from more.provenance import git_sha
    from more.tracking import LaunchTracker

    text = spec.path.read_text() if spec.path else ""
    return LaunchTracker.start(args.tracking_uri, spec.name, digest, text, git_sha(),
                               experiment_name=(spec.tracking or {}).get("experiment"))


def _node_text(node: dict) -> str:
    res = node.get("Resources", {})
    return f"{node['NodeManagerAddress']} ({res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU)"


def _publish(spec: AblationSpec, digest: str, store: ExperimentStore, rows: list[TrialRow]) -> int:
    """Print the results table, write results.md/.csv/.json next to the experiment, summarize failures."""
    from more.harness.results import FAILED, format_table, to_csv, to_json

    table = format_table(rows, spec.metric)
    print()
    print(table, end="")
    for name, text in (("results.md", f"# {spec.name} ({digest})\n\n{table}"), ("results.csv", to_csv(rows)),
                       ("results.json", to_json(spec, digest, rows))):
        store.write_text(name, text)
    print(f"\nresults written to {store.path}/results.{{md,csv,json}}")
    failed = [r for r in rows if r.status == FAILED]
    incomplete = [r for r in rows if r.status not in (FAILED, "TERMINATED")]
    if failed or incomplete:
        print(f"{len(failed)} of {len(rows)} trials failed" + (f", {len(incomplete)} did not finish" if incomplete
                                                                else "") + ":", file=sys.stderr)
        for r in failed + incomplete:
            print(f"  {r.trial}: {r.error or r.status}", file=sys.stderr)
        print("--resume runs them again from their last checkpoints", file=sys.stderr)
        return 1
    return 0
