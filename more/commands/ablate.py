"""``python -m more ablate SPEC``: run an ablation spec (``ablations/*.yaml``) as Ray Tune trials.

Argument parsing and printing around :func:`more.harness.launch` (and :func:`more.harness.dry_run.dry_run` for
``--dry-run``): every trial is validated before anything launches; the trials run on a private Ray started on a
loopback address (default) or on the cluster at ``--address``, in ``<storage>/<spec name>-<spec hash>``, reusing
trials that already ran anywhere in the storage or the MLflow store. The exit status is 0 when every trial
finished, 1 when some failed, 2 for bad input (a dry run whose checks failed included).
"""

from __future__ import annotations

import argparse
import sys

from more.harness.checks import DEFAULT_STORAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="an ablation spec, e.g. ablations/table3_synthetic.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials, the GPU-hour estimate and the reuse plan, then the checks that "
                             "failed; launch nothing")
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
    parser.add_argument("--cluster-config", help="the Ray cluster config whose node types a trial's GPUs are checked "
                                                 "against (default: cluster.yaml here or in the checkout)")


def run(args: argparse.Namespace) -> int:
    from more.harness import LaunchOptions, launch

    options = LaunchOptions(
        resume=args.resume, max_concurrent=args.max_concurrent, dashboard=args.dashboard,
        tracking=not args.no_tracking, rerun=args.rerun, across_commits=args.reuse_across_commits,
        retry_failed=not args.no_retry_failed, cluster_config=args.cluster_config,
    )
    where = {"storage": args.storage, "tracking_uri": args.tracking_uri, "address": args.address}
    if args.dry_run:
        from more.harness.dry_run import dry_run

        planned = dry_run(args.spec, options=options, **where)  # SpecError -> "spec error: ..." and exit 2
        print(planned.text, end="", flush=True)
        for problem in planned.problems:
            print(f"error: {problem}", file=sys.stderr)
        return planned.code
    return launch(args.spec, options=options, **where).code
