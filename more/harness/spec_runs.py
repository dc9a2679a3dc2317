"""The run folders of a spec's finished trials, for the commands that work on every trial of an ablation
(``infer --spec``): read from the results a launch published in its experiment folder, never from Ray or MLflow.

A reused trial's run folder is the one that trained it (in this experiment or another); its checkpoints are there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from more.harness.checks import DEFAULT_STORAGE, resolve_storage
from more.harness.spec import AblationSpec, expand, load_spec, spec_hash
from more.preflight import PreflightError

FINISHED = "TERMINATED"


@dataclass(frozen=True)
class SpecRun:
    """One finished trial of a spec and the run folder that holds its checkpoints."""

    trial: str
    condition: str
    seed: int
    run_dir: Path


def finished_runs(spec: AblationSpec | str | Path, *, storage: str = DEFAULT_STORAGE,
                  trials: list[str] | None = None) -> tuple[list[SpecRun], list[str]]:
    """The finished trials of ``spec`` (all, or those named in ``trials``) with a checkpoint in their run folder,
    and one note per trial left out (not finished, no checkpoint).

    Raises:
        PreflightError: the storage is not a folder, the spec was never launched there, its launch has not
            published results yet, ``trials`` names a trial the spec does not have, or no trial is left.
    """
    if not isinstance(spec, AblationSpec):
        spec = load_spec(spec)
    expanded = expand(spec, validate=False)
    if "://" in storage:
        raise PreflightError(f"--storage {storage}: the trials' run folders are read from a local or mounted folder")
    folder = Path(resolve_storage(storage)) / f"{spec.name}-{spec_hash(spec, expanded)}"
    results = folder / "results.json"
    if not folder.is_dir():
        raise PreflightError(f"no experiment of spec '{spec.name}' at {folder} (not launched yet, or launched with "
                             f"another --storage)")
    if not results.is_file():
        raise PreflightError(f"{results} does not exist: the launch of spec '{spec.name}' has not finished (see "
                             f"`python -m more status {spec.source}`)")
    try:
        rows = json.loads(results.read_text())["trials"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PreflightError(f"{results}: not a results file of more ({exc})") from None
    names = {t.name for t in expanded}
    unknown = [t for t in trials or [] if t not in names]
    if unknown:
        raise PreflightError(f"--trials {', '.join(unknown)}: not a trial of spec '{spec.name}' (its trials: "
                             f"{', '.join(sorted(names))})")
    runs: list[SpecRun] = []
    notes: list[str] = []
    for row in rows:
        if row.get("trial") not in names or (trials and row["trial"] not in trials):
            continue
        run_dir = Path(row.get("run_dir") or "")
        if row.get("status") != FINISHED:
            notes.append(f"{row['trial']}: left out, it did not finish ({row.get('status')})")
        elif not row.get("run_dir") or not any((run_dir / "checkpoints").glob("iter_*")):
            notes.append(f"{row['trial']}: left out, no checkpoint in its run folder {run_dir}")
        else:
            runs.append(SpecRun(row["trial"], row["condition"], int(row["seed"]), run_dir))
    if not runs:
        raise PreflightError(f"spec '{spec.name}': no finished trial with a checkpoint in {folder}"
                             + "".join(f"; {n}" for n in notes))
    return runs, notes
