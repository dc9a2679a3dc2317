"""``python -m more report SPEC_OR_EXPERIMENT [...]``: regenerate the paper's tables from tracked runs.

Argument parsing and printing around :func:`more.report.generate.generate_report`: reads the trials of a spec
(``ablations/*.yaml``) or of an MLflow experiment name from MLflow (``--tracking-uri``, env
``MLFLOW_TRACKING_URI``, default the embedded ``sqlite:///<repo>/work/mlflow/mlflow.db``), falling back to the
harness's ``<storage>/<spec name>-<hash>/results.json`` and run folders; writes Table 3 (+ paired comparison),
Table 4, sensitivity tables/plots and the missing/failed trials as Markdown, LaTeX, CSV and PNG to ``--out``
(default ``<repo>/work/reports/<spec name>/``; a folder holding other files is refused unless ``--force``), logs them
to the spec's parent run under ``report/``, and prints the Markdown Table 3 last.
"""

from __future__ import annotations

import argparse
import sys

OUTPUTS = ("seg", "cam", "lam", "fused", "aux_cam")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from more.report.build import FORMATS

    parser.add_argument("targets", nargs="+", metavar="SPEC_OR_EXPERIMENT",
                        help="an ablation spec (ablations/table3.yaml) or an MLflow experiment / spec name; several "
                             "give Table 4 across experiments")
    parser.add_argument("--format", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    parser.add_argument("--out", help="output folder (default: <repo>/work/reports/<spec name>/)")
    parser.add_argument("--force", action="store_true",
                        help="write into an --out folder that holds files more did not create")
    parser.add_argument("--output", choices=OUTPUTS, default="seg",
                        help="which prediction the numbers are of: val/<output>/* metrics (default: seg)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI or a sqlite path (default: env "
                                               "MLFLOW_TRACKING_URI, else <repo>/work/mlflow/mlflow.db)")
    parser.add_argument("--storage", help="the harness's experiment storage, read when MLflow is unreachable "
                                          "(default: <repo>/work/ray_results)")
    parser.add_argument("--classes", help="comma-separated classes for Table 4, in this order (default: all)")
    parser.add_argument("--checkpoint", default="last",
                        help="'last' (the last evaluation) or 'best:<split>' (per run, the evaluation with the "
                             "highest <split>/<output>/miou); default: last")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the spec's MLflow parent run")


def run(args: argparse.Namespace) -> int:
    from more.report.generate import generate_report
    from more.report.sources import SourceError

    try:
        result = generate_report(
            args.targets, tracking_uri=args.tracking_uri, storage=args.storage, out=args.out, output=args.output,
            checkpoint=args.checkpoint, formats=[f.strip() for f in args.format.split(",") if f.strip()],
            classes=None if args.classes is None else args.classes.split(","), log=not args.no_log,
            force=args.force,
        )  # bad input (PreflightError, SpecError, OutputError) -> one "error: ..." line and exit 2 (more.__main__)
    except SourceError as exc:
        print(exc, file=sys.stderr)
        return 1
    print()
    print(result.summary, end="")
    return 0
