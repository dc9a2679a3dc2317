"""A trial's tracking outbox: what its MLflow run must hold, kept in its run folder before anything is sent.

``<run folder>/tracking/outbox.jsonl`` gets one JSON line per event, appended by the trial's own thread:

- ``open``: an attempt started (tracking URI without password, parent run, trial key, run name, tags, params,
  ``config.yaml``);
- ``eval``: one evaluation as the trainer reported it (every metric at full precision, the time it was reported,
  the checkpoint folder, the tracking time so far);
- ``end``: the attempt ended (status, error text, the checkpoint to upload, pictures skipped).

``<run folder>/tracking/pending/iter_N/`` holds the evaluation's files (per-class tables, picture grid) until they
are uploaded. The folder is the source of truth: the trial's sender, a retried attempt and the driver's
reconciliation (:mod:`more.tracking.reconcile`) all bring MLflow up to it, with the same values and timestamps each
time, so a resend is recognised by the store as the same row (:mod:`more.tracking.sync`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FOLDER = "tracking"
OUTBOX = f"{FOLDER}/outbox.jsonl"
PENDING = f"{FOLDER}/pending"


@dataclass
class Opening:
    """The ``open`` event of one attempt."""

    uri: str
    parent: str
    trial_key: str
    run_name: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    config_yaml: str = ""
    log_checkpoint: bool = False


@dataclass
class Evaluation:
    """The ``eval`` event: one evaluation's numeric metrics at ``step``, reported at ``time_ms``."""

    step: int
    time_ms: int
    metrics: dict[str, float]
    checkpoint: str | None = None
    tracking_sec: float = 0.0


@dataclass
class Ending:
    """The ``end`` event of one attempt."""

    status: str
    error: str = ""
    checkpoint: str | None = None  # the checkpoint folder to upload (``log_checkpoint``), else None
    pictures_skipped: int = 0


@dataclass
class OutboxState:
    """What an outbox asks of the run: the latest attempt's opening and ending, every evaluation (the first report of
    a step wins: a retry from an older checkpoint reports the same step again), and how many attempts there were."""

    opening: Opening | None = None
    evaluations: dict[int, Evaluation] = field(default_factory=dict)
    ending: Ending | None = None
    attempts: int = 0


def pending_dir(folder: Path, step: int) -> Path:
    return folder / PENDING / f"iter_{step:06d}"


def pending_steps(folder: Path) -> list[int]:
    """Steps whose files still wait for upload, in order."""
    root = folder / PENDING
    if not root.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in root.iterdir() if p.is_dir() and p.name[5:].isdigit())


def drop_pending(folder: Path, step: int) -> None:
    shutil.rmtree(pending_dir(folder, step), ignore_errors=True)


class Outbox:
    """Appends events to ``<folder>/tracking/outbox.jsonl`` (one line each, flushed: a killed process loses none)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / OUTBOX

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": kind, **data}) + "\n")

    def opened(self, opening: Opening) -> None:
        self._append("open", asdict(opening))

    def evaluated(self, evaluation: Evaluation) -> None:
        self._append("eval", asdict(evaluation))

    def ended(self, ending: Ending) -> None:
        self._append("end", asdict(ending))

    def read(self) -> OutboxState:
        return read_outbox(self.folder)


def read_outbox(folder: str | Path) -> OutboxState:
    """The state an outbox describes (an empty state when there is none); a torn last line is ignored."""
    path = Path(folder) / OUTBOX
    state = OutboxState()
    if not path.is_file():
        return state
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill while it was written
        kind = record.pop("kind", "")
        if kind == "open":
            state.opening, state.ending = Opening(**record), None
            state.attempts += 1
        elif kind == "eval":
            evaluation = Evaluation(**record)
            state.evaluations.setdefault(evaluation.step, evaluation)
        elif kind == "end":
            state.ending = Ending(**record)
    return state


def jsonl_records(folder: Path, lower: int, upper: int) -> list[dict[str, Any]]:
    """Records of ``<folder>/metrics.jsonl`` (the trainer's) with ``lower < iter <= upper``."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if lower < int(record.get("iter", 0)) <= upper:
                out.append(record)
    return out
