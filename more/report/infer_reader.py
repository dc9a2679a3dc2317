"""Read from MLflow the inference runs of a spec's trials and the authors' runs imported against the spec.

Inference runs (``python -m more infer``) are tagged ``more.kind=infer`` with the protocol (``more.infer.task``,
``.source``, ``.split``, ``.multiscale``, ``.scales``, ``.crf``), the checkpoint's iteration, ``more.dataset`` and the
training trial run they came from (``more.train_run_id``, plus that run's ``more.spec_name`` / ``more.spec_hash`` /
``more.condition`` / ``more.seed``); their metrics are ``infer/<output>/miou`` and friends, in percent.
The authors' runs (``python -m more import-log``) are tagged ``more.kind=authors``, ``more.spec_name``,
``more.spec_hash``, ``more.condition``, ``more.authors_log``, with ``val/<output>/*`` metrics at step = iteration.

A run belongs to the spec when it is linked to one of the spec's trial runs, or when it carries the spec's name and
hash. Reading never fails the report: when the store cannot be read, :func:`read_inference` says so in a note.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from more.report.protocols import OUTPUTS, TASK_OUTPUTS, VALIDATION, Protocol
from more.report.records import Checkpoint, TrialRecord

INFER_KIND, AUTHORS_KIND = "infer", "authors"


@dataclass
class InferRun:
    """One ``more infer`` run, linked to a trial of the spec.

    Attributes:
        trial: the linked trial's name (``<condition>-s<seed>``); ``sweep`` its sweep point.
        metrics: the run's ``infer/*`` metrics (latest value per key; the run logs them at the checkpoint's step).
        start_time: milliseconds since the epoch: among runs of one trial and protocol the newest counts.
    """

    run_id: str
    name: str
    status: str
    start_time: int
    task: str
    source: str
    split: str
    dataset: str
    scales: tuple[float, ...] | None
    multiscale: bool | None
    crf: bool | None
    iteration: int | None
    checkpoint: str
    out: str
    train_run_id: str
    trial: str
    condition: str
    seed: int | None
    sweep: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def outputs(self) -> tuple[str, ...]:
        """The outputs it made: those its task and CRF flag produce, and any other it logged metrics for."""
        made = TASK_OUTPUTS.get(self.task, ())
        made = made if self.crf or self.task == "masks" else made[:1]
        logged = {o for o in OUTPUTS if any(k.startswith(f"infer/{o}/") for k in self.metrics)}
        return tuple(o for o in OUTPUTS if o in made or o in logged)

    def value(self, output: str, metric: str = "miou") -> float | None:
        """The output's metric when logged and finite, else None."""
        value = self.metrics.get(f"infer/{output}/{metric}")
        return value if value is not None and math.isfinite(value) else None

    def protocol(self, output: str) -> Protocol:
        source = "seg" if output.startswith("seg_") else self.source
        return Protocol(self.dataset, self.split, output, source, self.scales, self.multiscale)


@dataclass
class AuthorsRun:
    """One imported training log of the authors (a single run: never averaged with our seeds)."""

    run_id: str
    name: str
    log: str
    condition: str
    seed: int | None
    dataset: str
    spec_hash: str
    start_time: int
    iteration: int | None  # of the evaluation the metrics come from
    metrics: dict[str, float]  # val/<output>/* of that evaluation

    @property
    def label(self) -> str:
        return f"authors' run: {self.condition} ({self.log or self.name})"

    def validation_protocol(self) -> Protocol:
        return Protocol(self.dataset, "val", VALIDATION, "seg")


@dataclass
class Inference:
    """What the report read for Tables 1 and 2 and the authors' rows."""

    runs: list[InferRun] = field(default_factory=list)
    authors: list[AuthorsRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    read: bool = False  # False: MLflow was not read (the notes say why)


def _flag(text: Any) -> bool | None:
    value = str(text).strip().lower() if text is not None else ""
    return True if value == "true" else False if value == "false" else None


def _scales(text: Any) -> tuple[float, ...] | None:
    try:
        values = json.loads(text) if isinstance(text, str) else text
        return tuple(float(s) for s in values) if values else None
    except (TypeError, ValueError):
        return None


def _int(text: Any) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def _experiment_ids(client: Any) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def infer_run(run: Any, trial: TrialRecord | None) -> InferRun:
    """An MLflow run tagged ``more.kind=infer`` as an :class:`InferRun` (trial fields from the linked record when
    the report has it, else from the run's copied tags)."""
    tags = run.data.tags
    seed = trial.seed if trial else _int(tags.get("more.seed"))
    condition = trial.condition if trial else tags.get("more.condition", "")
    name = trial.trial if trial else (f"{condition}-s{seed}" if condition else tags.get("more.train_run_id", "")
                                      or run.info.run_id)
    return InferRun(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id, status=run.info.status,
        start_time=int(run.info.start_time or 0), task=tags.get("more.infer.task", ""),
        source=tags.get("more.infer.source", ""), split=tags.get("more.infer.split", ""),
        dataset=tags.get("more.dataset", ""), scales=_scales(tags.get("more.infer.scales")),
        multiscale=_flag(tags.get("more.infer.multiscale")), crf=_flag(tags.get("more.infer.crf")),
        iteration=_int(tags.get("more.infer.iteration")), checkpoint=tags.get("more.infer.checkpoint", ""),
        out=tags.get("more.infer.out", ""), train_run_id=tags.get("more.train_run_id", ""), trial=name,
        condition=condition, seed=seed, sweep=dict(trial.sweep) if trial else {},
        metrics={k: float(v) for k, v in run.data.metrics.items() if k.startswith("infer/")},
    )


def authors_run(client: Any, run: Any, checkpoint: Checkpoint, output: str) -> AuthorsRun:
    """An MLflow run tagged ``more.kind=authors`` with the ``val/*`` metrics of its last evaluation, or of its best
    one on ``checkpoint.split`` (the same choice as for our trials)."""
    tags = run.data.tags
    selection = checkpoint.selection_metric(output) if checkpoint.kind == "best" else f"val/{output}/miou"
    history = client.get_metric_history(run.info.run_id, selection) if selection in run.data.metrics else []
    history = [m for m in history if math.isfinite(m.value)]
    split = checkpoint.split if checkpoint.kind == "best" else "val"
    if checkpoint.kind == "best" and history:
        step = max(history, key=lambda m: (m.value, m.step)).step
        metrics = {}
        for key in run.data.metrics:
            if key.startswith(f"{split}/"):
                at = [m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == step]
                if at:
                    metrics[key] = at[-1]
    else:
        step = max((m.step for m in history), default=None)
        metrics = {k: float(v) for k, v in run.data.metrics.items() if k.startswith("val/")}
    return AuthorsRun(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id, log=tags.get("more.authors_log", ""),
        condition=tags.get("more.condition", "more"), seed=_int(tags.get("more.seed")),
        dataset=tags.get("more.dataset", ""), spec_hash=tags.get("more.spec_hash", ""),
        start_time=int(run.info.start_time or 0), iteration=step, metrics=metrics)


def read_inference(uri: str, *, spec_name: str, spec_hash: str, records: list[TrialRecord], checkpoint: Checkpoint,
                   output: str = "seg") -> Inference:
    """The inference runs linked to ``records`` (or tagged with the spec's name and hash) and the authors' runs of
    the spec: the newest per log file, preferring those imported against ``spec_hash``."""
    from more.report.mlflow_reader import TrackingUnavailable, make_client, quote, search_all

    try:
        client = make_client(uri)
        ids = _experiment_ids(client)
        by_run = {r.run_id: r for r in records if r.run_id}
        runs = []
        for run in search_all(client, ids, f"tags.`more.kind` = '{INFER_KIND}'") if ids else []:
            tags = run.data.tags
            linked = by_run.get(tags.get("more.train_run_id", ""))
            if linked or (tags.get("more.spec_name") == spec_name and tags.get("more.spec_hash") == spec_hash):
                runs.append(infer_run(run, linked))
        found = search_all(client, ids, f"tags.`more.kind` = '{AUTHORS_KIND}' and tags.`more.spec_name` = "
                                        f"{quote(spec_name)}")
        authors = [authors_run(client, run, checkpoint, output) for run in _newest_per_log(found, spec_hash)]
    except (TrackingUnavailable, OSError) as exc:
        return Inference(notes=[f"infer and authors' runs not read: {exc}"])
    except Exception as exc:  # noqa: BLE001 -- MlflowException and friends: Tables 3/4 still stand without these
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return Inference(notes=[f"infer and authors' runs not read ({type(exc).__name__}: {first})"])
    notes = [f"authors' run {a.name} was imported against spec hash {a.spec_hash}, not {spec_hash}: the spec "
             f"changed since" for a in authors if a.spec_hash != spec_hash]
    return Inference(runs=runs, authors=authors, notes=notes, read=True)


def _newest_per_log(runs: list[Any], spec_hash: str) -> list[Any]:
    """One run per imported log file (runs come newest first): the newest with the spec's hash, else the newest."""
    chosen: dict[str, Any] = {}
    for run in runs:
        log = run.data.tags.get("more.authors_log", "") or run.info.run_name
        held = chosen.get(log)
        if held is None or (run.data.tags.get("more.spec_hash") == spec_hash
                            and held.data.tags.get("more.spec_hash") != spec_hash):
            chosen[log] = run
    return sorted(chosen.values(), key=lambda r: r.info.start_time or 0)
