"""``python -m more report SPEC_OR_EXPERIMENT [...]``: regenerate the paper's tables from tracked runs.

Reads the trials of a spec (``ablations/*.yaml``) or of an MLflow experiment name from MLflow (``--tracking-uri``,
env ``MLFLOW_TRACKING_URI``, default the embedded ``sqlite:///<repo>/work/mlflow/mlflow.db``), falling back to the
harness's ``<storage>/<spec name>-<hash>/results.json`` and run folders when MLflow is unreachable or has no runs.
Writes Table 3 (+ paired comparison), Table 4, sensitivity tables/plots and the missing/failed trials as Markdown,
LaTeX, CSV and PNG to ``--out`` (default ``<repo>/work/reports/<spec name>/``), logs them to the spec's parent run
under ``report/`` when MLflow is reachable, and prints the Markdown Table 3 last.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUTPUTS = ("seg", "cam", "lam", "fused", "aux_cam")


def repo_root() -> Path:
    """The checkout holding this package (its pyproject.toml), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def tracking_uri(value: str | None) -> str:
    """``value``, else ``$MLFLOW_TRACKING_URI``, else the embedded store; a plain path (a ``*.db`` file or a folder
    holding ``mlflow.db``) means that sqlite database, as everywhere in the project."""
    chosen = value or os.environ.get("MLFLOW_TRACKING_URI") or str(repo_root() / "work" / "mlflow")
    if "://" in chosen:
        return chosen
    path = Path(chosen).expanduser().resolve()
    return f"sqlite:///{path if path.suffix == '.db' else path / 'mlflow.db'}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from more.report.build import FORMATS

    parser.add_argument("targets", nargs="+", metavar="SPEC_OR_EXPERIMENT",
                        help="an ablation spec (ablations/table3.yaml) or an MLflow experiment / spec name; several "
                             "give Table 4 across experiments")
    parser.add_argument("--format", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    parser.add_argument("--out", help="output folder (default: <repo>/work/reports/<spec name>/)")
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
    from more.harness.spec import SpecError
    from more.report.build import FORMATS, ReportOptions, build_report, write_report
    from more.report.sources import Checkpoint, SourceError, load_experiment

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        print(f"--format {args.format!r}: choose from {','.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        checkpoint = Checkpoint.parse(args.checkpoint)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    for target in args.targets:
        if target.endswith((".yaml", ".yml")) and not Path(target).is_file():
            print(f"spec file not found: {target}", file=sys.stderr)
            return 2
    # A tracking server that is down should cost seconds, not MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(args.tracking_uri)
    storage = Path(args.storage).expanduser().resolve() if args.storage else repo_root() / "work" / "ray_results"
    from more.preflight import input_dir, output_dir
    from more.preflight import tracking_uri as check_tracking

    check_tracking(uri, probe=False)  # an unreachable server is fine here: the report falls back to results.json
    if args.storage:
        input_dir(storage, "--storage")
    if args.out:
        output_dir(Path(args.out).expanduser(), "--out")
    experiments = []
    for target in args.targets:
        try:
            exp = load_experiment(target, tracking_uri=uri, storage=storage, checkpoint=checkpoint,
                                  output=args.output)
        except SpecError as exc:
            print(f"spec error: {exc}", file=sys.stderr)
            return 2
        except SourceError as exc:
            print(f"no runs found for {target}: {exc}", file=sys.stderr)
            return 1
        experiments.append(exp)
    classes = _check_classes(args.classes, experiments, args.output)
    for exp in experiments:
        print(f"{exp.name} (spec hash {exp.spec_hash}): {len(exp.records)} trials from {exp.source}", file=sys.stderr)
        for note in exp.notes:
            print(f"  note: {note}", file=sys.stderr)
    options = ReportOptions(output=args.output, checkpoint=checkpoint, formats=formats,
                            classes=classes)
    report = build_report(experiments, options)
    out = Path(args.out).expanduser() if args.out else repo_root() / "work" / "reports" / "+".join(
        e.name for e in experiments)
    written = write_report(report, out)
    print(f"report: {len(written)} files written to {out}", file=sys.stderr)
    if not args.no_log:
        _log_to_parents(experiments, out)
    print()
    print(report.summary, end="")
    return 0


def _check_classes(text: str | None, experiments: list, output: str) -> list[str] | None:
    """``--classes``: every name must be a class the runs logged an IoU for (when they logged any); returns the
    names (None when the flag is not given)."""
    from more.hints import did_you_mean
    from more.preflight import PreflightError
    from more.report.tables import discover_classes

    wanted = [c.strip() for c in text.split(",") if c.strip()] if text is not None else []
    if text is not None and not wanted:
        raise PreflightError(f"--classes {text!r}: give comma-separated class names")
    found = discover_classes([r for exp in experiments for r in exp.records], output)
    unknown = [c for c in wanted if found and c not in found]
    if unknown:
        raise PreflightError(f"--classes: unknown class '{unknown[0]}'{did_you_mean(unknown[0], found)} (the runs "
                             f"have: {', '.join(found)})")
    return wanted or None


def _log_to_parents(experiments: list, out: Path) -> None:
    """Log the report folder to each spec's parent run; a failure here is a warning, the files are written."""
    from more.report.mlflow_reader import log_report

    for exp in experiments:
        if not (exp.tracking_uri and exp.parent_run_id):
            continue
        try:
            log_report(exp.tracking_uri, exp.parent_run_id, out)
            print(f"report logged to MLflow run {exp.parent_run_id} under report/", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 -- the report on disk is the result; logging is a copy
            print(f"warning: could not log the report to MLflow run {exp.parent_run_id}: {exc}", file=sys.stderr)
