"""The report's records: one trial (:class:`TrialRecord`), one experiment's trials (:class:`Experiment`) and which
evaluation of a run the numbers come from (:class:`Checkpoint`).

Both readers (:mod:`more.report.sources` for the harness's files, :mod:`more.report.mlflow_reader` for MLflow)
build these, so they live here and the imports run one way: sources -> mlflow_reader -> records.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from more.yamlio import YamlError, load_yaml

FINISHED, FAILED, MISSING = "FINISHED", "FAILED", "MISSING"
# Ray Tune and MLflow spell the same states differently; the report speaks MLflow's.
_STATUS = {"TERMINATED": FINISHED, "ERROR": FAILED, "FINISHED": FINISHED, "FAILED": FAILED}


def normalize_status(status: str) -> str:
    return _STATUS.get(str(status).upper(), str(status).upper() or "UNKNOWN")


@dataclass(frozen=True)
class Checkpoint:
    """Which evaluation of a run the numbers come from: the last one, or the best one on a split.

    ``best`` picks, per run, the evaluation with the highest ``<split>/<output>/miou``.
    """

    kind: str = "last"  # last | best
    split: str = "val"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if text == "last":
            return cls()
        if text.startswith("best:") and text[5:]:
            return cls("best", text[5:])
        raise ValueError(f"--checkpoint {text!r}: expected 'last' or 'best:<split>' (e.g. best:val)")

    def selection_metric(self, output: str) -> str:
        return f"{self.split}/{output}/miou"


@dataclass
class TrialRecord:
    """One trial as the report sees it.

    Attributes:
        trial: trial name (``<condition>[-<key=value>...]-s<seed>``).
        condition: the spec condition.
        seed: ``train.seed`` (None when unknown).
        sweep: the sweep point (dotted key -> value), ``{}`` for the base point.
        status: FINISHED | FAILED | MISSING | RUNNING | KILLED | ... (MLflow's spelling).
        error: why it failed or is missing ("" otherwise).
        metrics: every metric of the chosen evaluation (``val/seg/miou``, ``val/seg/iou/<class>``, ...).
        config: the flat resolved config (dotted key -> value).
        iteration: the iteration of that evaluation (None when unknown).
        confusion: per-class confusion ratio, output -> class -> FP/TP (from the per-class CSV artifact), if any.
        run_id: the MLflow run id ("" when read from files).
        run_dir: the trainer's run folder ("" when unknown).
    """

    trial: str
    condition: str
    seed: int | None
    sweep: dict[str, Any]
    status: str
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    iteration: int | None = None
    confusion: dict[str, dict[str, float]] = field(default_factory=dict)
    run_id: str = ""
    run_dir: str = ""
    code: str = ""  # the code identity it ran at ("" when unknown)
    origin: str = ""  # set when the launch reused this result from an earlier one: where it ran


@dataclass
class Experiment:
    """The records of one spec (one launch identity), with where they were read from."""

    name: str
    spec_hash: str
    records: list[TrialRecord]
    source: str  # human-readable: "MLflow <uri> ..." or "results.json at <path>"
    parent_run_id: str | None = None
    tracking_uri: str | None = None  # set when read from a reachable MLflow store
    sweeps: list[str] = field(default_factory=list)  # swept keys, spec order
    conditions: list[str] = field(default_factory=list)  # spec order
    paper: Any = None  # the spec's ``paper:`` block, if any
    notes: list[str] = field(default_factory=list)
    inference: Any = None  # infer and authors' runs (:class:`more.report.infer_reader.Inference`), read from MLflow


def parse_value(text: Any) -> Any:
    """A config value stored as text (MLflow params, override text): read as YAML, else kept as text."""
    if not isinstance(text, str):
        return text
    value = _parsed(text)
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


@functools.lru_cache(maxsize=65536)
def _parsed(text: str) -> Any:
    # a report reads ~130 params per run and the runs of a spec share most values: each text is parsed once
    try:
        return load_yaml(text, where="value")
    except YamlError:
        return text


def reuse_notes(records: list[TrialRecord]) -> list[str]:
    """Which trials a launch reused and, when the table mixes code versions, which commits it holds (with counts)."""
    reused = [r for r in records if r.origin]
    notes = [f"{len(reused)} trials reused from earlier launches (same content key): "
             + ", ".join(f"{r.trial} from {r.origin}" for r in reused)] if reused else []
    codes: dict[str, int] = {}
    for r in records:
        if r.code:
            codes[r.code] = codes.get(r.code, 0) + 1
    if len(codes) > 1:
        notes.append("commits mixed in this table: " + ", ".join(f"{c[:12]} ({n} trials)" for c, n in codes.items()))
    return notes
