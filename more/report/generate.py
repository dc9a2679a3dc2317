"""Generate the report of one or more specs (or MLflow experiments): the library behind ``python -m more report``::

    from more.report.generate import generate_report

    result = generate_report(["ablations/table3_synthetic.yaml"])
    print(result.summary)            # the Markdown Table 3
    print(result.out, result.files)  # where the Markdown, LaTeX, CSV and PNG files went

Reads each target's trials from MLflow, else from the harness's files (:func:`more.report.sources.load_experiment`),
builds every table (:mod:`more.report.build`), writes them to ``out`` (default ``<repo>/work/reports/<names>/``) by
the output rules of :mod:`more.outputs` (a folder holding files ``more`` did not create is refused unless
``force``), and logs them to each spec's MLflow parent run under ``report/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.preflight import PreflightError

RECOGNISED = ("report.md", "trials.csv")  # a report folder written before output folders carried the marker
Say = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class ReportResult:
    """A written report: the folder, its files, the Markdown Table 3 to print, and what it was read from."""

    out: Path
    files: list[Path]
    summary: str
    experiments: list[Any]
    logged_to: list[str] = field(default_factory=list)  # MLflow parent runs the report was logged to


def repo_root() -> Path:
    """The checkout holding this package (its pyproject.toml), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def default_out(names: Sequence[str]) -> Path:
    return repo_root() / "work" / "reports" / "+".join(names)


def resolve_tracking_uri(value: str | None) -> str:
    """``value``, else ``$MLFLOW_TRACKING_URI``, else the embedded store; a plain path (a ``*.db`` file or a folder
    holding ``mlflow.db``) means that sqlite database, as everywhere in the project."""
    chosen = value or os.environ.get("MLFLOW_TRACKING_URI") or str(repo_root() / "work" / "mlflow")
    if "://" in chosen:
        return chosen
    path = Path(chosen).expanduser().resolve()
    return f"sqlite:///{path if path.suffix == '.db' else path / 'mlflow.db'}"


def generate_report(targets: Sequence[str], *, tracking_uri: str | None = None, storage: str | Path | None = None,
                    out: str | Path | None = None, output: str = "seg", checkpoint: Any = "last",
                    formats: Sequence[str] | None = None, classes: Sequence[str] | None = None, log: bool = True,
                    force: bool = False, warn: Say = _stderr) -> ReportResult:
    """Read, build, write and log the report of ``targets`` (spec files or experiment / spec names).

    Args:
        tracking_uri: the MLflow store (default ``$MLFLOW_TRACKING_URI``, else ``<repo>/work/mlflow/mlflow.db``).
        storage: the harness's experiment storage, read when MLflow has no runs (default
            ``<repo>/work/ray_results``).
        out: the output folder (default ``<repo>/work/reports/<names>/``, owned by ``more``).
        output: the prediction the numbers are of (``val/<output>/*``).
        checkpoint: ``"last"`` or ``"best:<split>"`` (or a :class:`~more.report.sources.Checkpoint`).
        formats: a subset of :data:`more.report.build.FORMATS` (default: all).
        classes: Table 4's classes, in this order (default: all the runs logged).
        log: log the report to each spec's MLflow parent run.
        force: write into an ``out`` folder that holds files ``more`` did not create.
        warn: where notes and warnings go (default: stderr).

    Raises:
        PreflightError: bad input (an unknown format or class, an ``out`` that holds the user's files, a spec
            that never ran: :class:`~more.report.sources.NoTrialsYet`), before anything is written.
        SourceError: neither MLflow nor the harness's files could be read for a target.
    """
    from more.outputs import check_output_dir, own_dir
    from more.preflight import input_dir
    from more.preflight import tracking_uri as check_tracking
    from more.report.build import FORMATS, ReportOptions, build_report, write_report
    from more.report.sources import Checkpoint, SourceError, load_experiment

    formats = tuple(FORMATS if formats is None else formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise PreflightError(f"--format {','.join(formats)!r}: choose from {','.join(FORMATS)}")
    if not isinstance(checkpoint, Checkpoint):
        try:
            checkpoint = Checkpoint.parse(str(checkpoint))
        except ValueError as exc:
            raise PreflightError(str(exc)) from None
    for target in targets:
        if target.endswith((".yaml", ".yml")) and not Path(target).is_file():
            raise PreflightError(f"spec file not found: {target}")
    # A tracking server that is down should cost seconds, not MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_tracking_uri(tracking_uri)
    root = Path(storage).expanduser().resolve() if storage else repo_root() / "work" / "ray_results"
    check_tracking(uri, probe=False)  # an unreachable server is fine here: the report falls back to results.json
    if storage:
        input_dir(root, "--storage")
    if out is not None:  # before reading anything: a refused folder costs seconds
        check_output_dir(out, what="--out", force=force, recognised=RECOGNISED)
    experiments = []
    for target in targets:
        try:
            experiments.append(load_experiment(target, tracking_uri=uri, storage=root, checkpoint=checkpoint,
                                               output=output))
        except SourceError as exc:
            if isinstance(exc, PreflightError):
                raise
            raise SourceError(f"no runs found for {target}: {exc}") from None
    chosen = check_classes(classes, experiments, output)
    folder = Path(out).expanduser() if out is not None else default_out([e.name for e in experiments])
    if out is None:
        check_output_dir(folder, what="the report folder", force=force, recognised=RECOGNISED)
    for exp in experiments:
        warn(f"{exp.name} (spec hash {exp.spec_hash}): {len(exp.records)} trials from {exp.source}")
        for note in exp.notes:
            warn(f"  note: {note}")
    report = build_report(experiments, ReportOptions(output=output, checkpoint=checkpoint, formats=formats,
                                                     classes=chosen))
    own_dir(folder, command="report")
    written = write_report(report, folder)
    warn(f"report: {len(written)} files written to {folder}")
    logged = _log_to_parents(experiments, folder, warn) if log else []
    return ReportResult(folder, written, report.summary, experiments, logged)


def check_classes(wanted: Sequence[str] | None, experiments: list, output: str) -> list[str] | None:
    """Table 4's classes: every name must be a class the runs logged an IoU for (when they logged any)."""
    from more.hints import did_you_mean
    from more.report.tables import discover_classes

    if wanted is None:
        return None
    names = [c.strip() for c in wanted if c.strip()]
    if not names:
        raise PreflightError("--classes: give comma-separated class names")
    found = discover_classes([r for exp in experiments for r in exp.records], output)
    unknown = [c for c in names if found and c not in found]
    if unknown:
        raise PreflightError(f"--classes: unknown class '{unknown[0]}'{did_you_mean(unknown[0], found)} (the runs "
                             f"have: {', '.join(found)})")
    return names


def _log_to_parents(experiments: list, folder: Path, warn: Say) -> list[str]:
    """Log the report folder to each spec's parent run; a failure here is a warning, the files are written."""
    from more.report.mlflow_reader import log_report

    logged = []
    for exp in experiments:
        if not (exp.tracking_uri and exp.parent_run_id):
            continue
        try:
            log_report(exp.tracking_uri, exp.parent_run_id, folder)
            warn(f"report logged to MLflow run {exp.parent_run_id} under report/")
            logged.append(exp.parent_run_id)
        except Exception as exc:  # noqa: BLE001 -- the report on disk is the result; logging is a copy
            warn(f"warning: could not log the report to MLflow run {exp.parent_run_id}: {exc}")
    return logged
