"""Where the report's numbers come from: trial records read from MLflow, or from the harness's files.

A :class:`TrialRecord` is one trial of a spec: its condition, seed, sweep point, status, error, the metrics of the
chosen checkpoint and its flat resolved config. :func:`load_experiment` reads them from the MLflow tracking store
(:mod:`more.report.mlflow_reader`); when the store is unreachable or holds no run of the spec it falls back to the
harness's experiment folder (``<storage>/<spec name>-<hash>/results.json`` and each trial's run folder). Trials the
spec expands to but that no source knows are added as ``MISSING`` records, so nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.preflight import PreflightError
from more.report.records import (  # noqa: F401 -- re-exported: the report's modules import them from here
    FAILED,
    FINISHED,
    MISSING,
    Checkpoint,
    Experiment,
    TrialRecord,
    normalize_status,
    parse_value,
    reuse_notes,
)
from more.yamlio import load_yaml

_SWEEP_KEY = re.compile(r"(?:^|\s)([A-Za-z_][\w.]*)=")  # "a.b=1 c.d=[1, 2]"


class SourceError(RuntimeError):
    """Neither MLflow nor the harness's files hold the runs asked for (the message says where it looked)."""


class NoTrialsYet(PreflightError):
    """A spec that never ran: no MLflow run of its hash and no experiment folder (bad input: the report of a
    spec that was never launched)."""


@dataclass
class SpecInfo:
    """What the report needs from a spec file: name, hash, expected trials, swept keys and the paper block."""

    name: str
    spec_hash: str | None
    experiment_name: str  # the MLflow experiment (``tracking.experiment`` or the spec name)
    expected: list[TrialRecord]  # MISSING placeholders in spec order
    sweeps: list[str]
    conditions: list[str]
    paper: Any
    notes: list[str]


def read_spec(path: str | Path) -> SpecInfo:
    """Expand a spec with the harness's own code; when that fails (e.g. its config file is elsewhere), keep what the
    YAML says (name, conditions, sweeps, paper block) and let the runs' tags supply the hash."""
    from more.harness.spec import SpecError, _paper, expand, load_spec, read_spec_yaml, spec_hash

    try:
        spec = load_spec(path)
        trials = expand(spec, validate=False)  # names, conditions and the hash: no config needs resolving
    except SpecError as exc:
        data = read_spec_yaml(Path(path).read_text(), where=str(path))
        _paper(data.get("paper"), lambda text: SpecError(f"{path}: {text}"))  # the report computes with it
        name = str(data.get("name") or Path(path).stem)
        tracking = data.get("tracking") if isinstance(data.get("tracking"), dict) else {}
        return SpecInfo(name, None, str(tracking.get("experiment") or name), [], list(data.get("sweeps") or {}),
                        list(data.get("conditions") or {}), data.get("paper"),
                        [f"the spec does not expand here ({exc}); expected trials unknown, spec hash taken from the "
                         f"newest launch"])
    expected = [TrialRecord(t.name, t.condition, t.seed, dict(t.sweep), MISSING,
                            "expected from the spec expansion, but no tracked run or result was found") for t in trials]
    tracking = spec.tracking if isinstance(spec.tracking, dict) else {}
    return SpecInfo(spec.name, spec_hash(spec, trials), str(tracking.get("experiment") or spec.name), expected,
                    list(spec.sweeps), list(spec.conditions), spec.paper, [])


def load_experiment(target: str, *, tracking_uri: str, storage: str | Path, checkpoint: Checkpoint,
                    output: str = "seg") -> Experiment:
    """Records of a spec (a YAML path) or of an experiment name, from MLflow or else from the harness's files.

    Raises:
        SourceError: when no source has runs of it.
    """
    from more.report.mlflow_reader import NoRuns, TrackingUnavailable, read_mlflow

    path = Path(target)
    info = read_spec(path) if path.suffix in (".yaml", ".yml") and path.is_file() else None
    name = info.name if info else target
    exp_name = info.experiment_name if info else target
    digest = info.spec_hash if info else None
    try:
        exp = read_mlflow(tracking_uri, exp_name, name, digest, checkpoint=checkpoint, output=output)
    except TrackingUnavailable as exc:
        reason = str(exc)
        try:
            exp = read_results(storage, name, digest, checkpoint=checkpoint, output=output)
        except SourceError as inner:
            folder = Path(storage).expanduser() / f"{name}-{digest}"
            if isinstance(exc, NoRuns) and digest and not folder.exists():
                raise NoTrialsYet(f"spec '{name}' (hash {digest}) has no trials yet: {reason}, and no experiment "
                                  f"folder {folder}; launch it first (python -m more ablate {target})") from None
            raise SourceError(f"{reason}; and {inner}") from None
        exp.notes.insert(0, f"MLflow not used: {reason}")
    if info:
        exp.sweeps = _merge(info.sweeps, exp.sweeps)
        exp.conditions = _merge(info.conditions, exp.conditions)
        exp.paper = info.paper if info.paper is not None else exp.paper
        exp.notes = info.notes + exp.notes
        exp.records = merge_expected(exp.records, info.expected)
    attach_inference(exp, tracking_uri, checkpoint, output)
    return exp


def attach_inference(exp: Experiment, tracking_uri: str, checkpoint: Checkpoint, output: str) -> None:
    """Tables 1-2 and the authors' rows: the spec's infer and authors' runs, read from MLflow when the trials were
    (the harness's files know neither)."""
    from more.report.infer_reader import Inference, read_inference

    if exp.tracking_uri is None:
        exp.inference = Inference(notes=["the trials were not read from MLflow, where infer runs are tracked"])
        return
    exp.inference = read_inference(exp.tracking_uri, spec_name=exp.name, spec_hash=exp.spec_hash,
                                   records=exp.records, checkpoint=checkpoint, output=output)
    exp.notes += exp.inference.notes


def merge_expected(records: list[TrialRecord], expected: list[TrialRecord]) -> list[TrialRecord]:
    """The found records in the spec's trial order, each expected trial not found as a MISSING record, then any
    record the spec does not know (e.g. runs of conditions removed from the spec)."""
    found = {r.trial: r for r in records}
    out = [found.pop(e.trial, e) for e in expected]
    return out + [r for r in records if r.trial in found]


def _merge(first: list[str], second: list[str]) -> list[str]:
    return first + [x for x in second if x not in first]


# ---------------------------------------------------------------------------------------- harness's files


def experiment_folder(storage: str | Path, name: str, digest: str | None) -> Path:
    """``<storage>/<name>-<hash>``; without a hash, the newest ``<name>-*`` folder holding a results.json."""
    root = Path(storage).expanduser()
    if digest:
        return root / f"{name}-{digest}"
    candidates = sorted((p for p in root.glob(f"{name}-*") if (p / "results.json").is_file()),
                        key=lambda p: (p / "results.json").stat().st_mtime)
    if not candidates:
        raise SourceError(f"no results.json under {root}/{name}-*")
    return candidates[-1]


def read_results(storage: str | Path, name: str, digest: str | None, *, checkpoint: Checkpoint,
                 output: str = "seg") -> Experiment:
    """Records from the harness's ``results.json``, completed from each trial's run folder (config.yaml,
    metrics.json, metrics.jsonl and eval/iter_N.md written by the trainer)."""
    folder = experiment_folder(storage, name, digest)
    results = folder / "results.json"
    if not results.is_file():
        raise SourceError(f"no results.json at {results}")
    data = json.loads(results.read_text())
    entries = data if isinstance(data, list) else data.get("trials", [])
    digest = digest or (data.get("spec_hash") if isinstance(data, dict) else None) or folder.name.rsplit("-", 1)[-1]
    metric_name = str(data.get("metric") or "") if isinstance(data, dict) else ""
    records = [_record_from_entry(e, folder, checkpoint, output, metric_name) for e in entries]
    return Experiment(name=name, spec_hash=digest, records=records, source=f"results.json at {results}",
                      sweeps=_merge([], [k for r in records for k in r.sweep]),
                      conditions=_merge([], [r.condition for r in records]), notes=reuse_notes(records))


def _record_from_entry(entry: dict[str, Any], folder: Path, checkpoint: Checkpoint, output: str,
                       metric_name: str) -> TrialRecord:
    trial = str(entry.get("trial", ""))
    run_dir = _run_dir(entry, folder, trial)
    config = entry.get("config") or (_flat_yaml(run_dir / "config.yaml") if run_dir else {})
    status = normalize_status(entry.get("status", ""))
    metrics, iteration = {}, None
    if checkpoint.kind == "best" and run_dir:
        metrics, iteration = best_from_run_dir(run_dir, checkpoint.selection_metric(output))
    else:
        metrics = dict(entry.get("metrics") or {})
        if not metrics and run_dir and (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        if not metrics and metric_name and entry.get("metric") is not None:  # compact rows: the spec metric only
            metrics = {metric_name: entry["metric"]}
        it = metrics.get("iter", entry.get("iterations"))
        iteration = int(it) if it is not None else None
    seed = entry.get("seed", config.get("train.seed"))
    return TrialRecord(
        trial=trial, condition=str(entry.get("condition", "")), seed=int(seed) if seed is not None else None,
        sweep=_sweep_dict(entry.get("sweep")), status=status, error=str(entry.get("error") or ""),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, config=dict(config),
        iteration=iteration, run_dir=str(run_dir or ""), code=str(entry.get("code") or ""),
        origin=str(entry.get("origin") or ""),
    )


def _run_dir(entry: dict[str, Any], folder: Path, trial: str) -> Path | None:
    for candidate in (entry.get("run_dir"), entry.get("path") and Path(entry["path"]) / "run", folder / trial / "run"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _sweep_dict(value: Any) -> dict[str, Any]:
    """The sweep point as a dict, from a dict, its JSON, or the harness's ``"key=value key2=value2"`` text."""
    if isinstance(value, dict):
        return dict(value)
    if not value:
        return {}
    text = str(value).strip()
    if text.startswith("{"):
        return dict(json.loads(text))
    keys = list(_SWEEP_KEY.finditer(text))
    return {m.group(1): parse_value(text[m.end():keys[i + 1].start() if i + 1 < len(keys) else len(text)].strip())
            for i, m in enumerate(keys)}


def _flat_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return _flatten(load_yaml(path.read_text(), where=str(path)) or {})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def best_from_run_dir(run_dir: Path, selection: str) -> tuple[dict[str, float], int | None]:
    """The evaluation record of ``metrics.jsonl`` with the highest ``selection`` value, plus its per-class IoU read
    back from ``eval/iter_N.md`` (metrics.jsonl leaves per-class values out)."""
    history = run_dir / "metrics.jsonl"
    if not history.is_file():
        return {}, None
    evals = [rec for rec in map(json.loads, filter(None, history.read_text().splitlines()))
             if isinstance(rec.get(selection), (int, float)) and math.isfinite(rec[selection])]
    if not evals:
        return {}, None
    best = max(evals, key=lambda rec: (rec[selection], rec.get("iter", 0)))
    iteration = int(best["iter"]) if "iter" in best else None
    metrics = dict(best)
    if iteration is not None:
        metrics.update(per_class_from_eval_md(run_dir / "eval" / f"iter_{iteration:06d}.md"))
    return metrics, iteration


def per_class_from_eval_md(path: Path) -> dict[str, float]:
    """``val/<output>/iou/<class>`` from the trainer's per-class Markdown table (``| class | cam | seg |``)."""
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    outputs: list[str] = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "class":
            outputs = cells[1:]
        elif outputs and len(cells) == len(outputs) + 1 and not cells[0].startswith("-"):
            for out_name, text in zip(outputs, cells[1:]):
                try:
                    out[f"val/{out_name.lower()}/iou/{cells[0]}"] = float(text)
                except ValueError:
                    continue
    return out
