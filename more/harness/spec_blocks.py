"""The blocks of an ablation spec and their checks: resources, scheduler, stop rule, metric, tracking and the paper's
numbers (:mod:`more.harness.spec` parses the spec itself; :mod:`more.search.spec` reuses these for search specs).

Each check takes ``fail``, a function that turns a message into the caller's error (e.g. a
:class:`~more.harness.spec.SpecError` naming the spec file), and returns the parsed block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.config.load import flatten
from more.hints import did_you_mean

SCHEDULERS = ("fifo", "asha")
TIME_ATTRS = ("iter", "training_iteration", "time_total_s")
OUTPUTS = ("cam", "aux_cam", "lam", "fused", "seg")
OUTPUT_METRICS = ("miou", "precision", "recall", "confusion", "miou_present")  # miou_present: on small subsets
DDP_DRIVER_CPUS = 0.1  # the Tune side of a multi-worker trial only relays reports (Ray refuses a 0-CPU trial)


@dataclass(frozen=True)
class Resources:
    """What one trial reserves on a Ray node (fractions allowed, e.g. two trials per GPU with ``gpus: 0.5``).

    With ``workers`` > 1 the trial trains with DistributedDataParallel through Ray Train: ``cpus`` and
    ``gpus / workers`` are reserved per worker process, and the Tune trial itself (which relays the evaluations to
    Tune and MLflow) reserves only :data:`DDP_DRIVER_CPUS`.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 1

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus / self.workers

    def as_ray(self) -> dict[str, float]:
        """The Tune trial's own reservation (``tune.with_resources``)."""
        if self.workers > 1:
            return {"cpu": DDP_DRIVER_CPUS, "gpu": 0.0}
        return {"cpu": self.cpus, "gpu": self.gpus}

    def per_worker(self) -> dict[str, float]:
        """One training process's reservation (Ray Train's ``resources_per_worker``)."""
        return {"CPU": self.cpus, "GPU": self.gpus_per_worker}

    def hashed(self) -> dict[str, float]:
        """What enters the spec hash (``workers`` only when > 1, so specs written before it keep their hash)."""
        out: dict[str, float] = {"cpus": self.cpus, "gpus": self.gpus}
        if self.workers > 1:
            out["workers"] = self.workers
        return out



TRACKING_KEYS = {"experiment": str, "log_checkpoint": bool}
PAPER_KEYS = ("source", "columns", "rows", "table4", "defaults")  # columns, defaults: free-form notes


def _tracking(value: Any, fail: Any) -> dict[str, Any] | None:
    """``tracking: {experiment: NAME, log_checkpoint: true}`` (both optional)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail(f"tracking={value!r}: expected a mapping such as {{experiment: NAME, log_checkpoint: true}}")
    for key, item in value.items():
        if key not in TRACKING_KEYS:
            known = f" (known keys: {', '.join(TRACKING_KEYS)})"
            raise fail(f"tracking.{key}: unknown key{did_you_mean(key, TRACKING_KEYS, otherwise=known)}")
        kind = TRACKING_KEYS[key]
        if not isinstance(item, kind) or (kind is str and not item):
            raise fail(f"tracking.{key}={item!r}: expected {'true/false' if kind is bool else 'a name'}")
    return dict(value)


def _paper(value: Any, fail: Any) -> Any:
    """The published numbers: ``{source: text, rows: {condition: {metric: number}}, table4: {method: {class:
    [iou, confusion]}}, defaults: {...}}``; every number in rows and table4 must be finite (the report uses them)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail(f"paper={value!r}: expected a mapping with 'rows' (and optional 'source', 'table4')")
    for key in value:
        if key not in PAPER_KEYS:
            known = f" (known keys: {', '.join(PAPER_KEYS)})"
            raise fail(f"paper.{key}: unknown key{did_you_mean(key, PAPER_KEYS, otherwise=known)}")
    for key, levels in (("rows", "condition -> {metric: number}"), ("table4", "method -> {class: [iou, confusion]}")):
        block = value.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise fail(f"paper.{key}={block!r}: expected a mapping {levels}")
        for outer, inner in block.items():
            if not isinstance(inner, dict):
                raise fail(f"paper.{key}.{outer}={inner!r}: expected a mapping")
            for name, number in inner.items():
                numbers = number if key == "table4" and isinstance(number, list) and len(number) == 2 else [number]
                if key == "table4" and numbers == [number]:
                    raise fail(f"paper.table4.{outer}.{name}={number!r}: expected [iou, confusion]")
                if not all(_is_number(n) for n in numbers):
                    raise fail(f"paper.{key}.{outer}.{name}={number!r}: expected a finite number")
    return value


def _resolve_source(config: Any, path: Path | None, fail: Any) -> str:
    """A preset name stays as is; a YAML path is found next to the cwd, the spec, or the spec's parent (repo root)."""
    from more.config import PRESETS

    if not isinstance(config, str) or not config:
        raise fail(f"experiment.config={config!r}: need a YAML path or a preset name ({', '.join(PRESETS)})")
    candidate = Path(config).expanduser()
    if candidate.is_absolute():
        places = [candidate]
    else:
        bases = [Path.cwd()] + ([path.resolve().parent, path.resolve().parent.parent] if path else [])
        places = [base / candidate for base in bases]
    for place in places:
        if place.is_file():
            return str(place.resolve())
    if config in PRESETS:
        return config
    raise fail(f"experiment.config={config!r}: no such file (looked in {', '.join(str(p.parent) for p in places)}) "
               f"and not a preset ({', '.join(PRESETS)})")


def _override_map(value: Any, key: str, fail: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{key}={value!r}: expected a mapping of dotted keys to values, got {type(value).__name__}")
    return flatten(value)


def _sweeps(value: Any, fail: Any) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"sweeps={value!r}: expected a mapping of dotted key -> list of values")
    out: dict[str, list[Any]] = {}
    for key, values in flatten(value).items():
        if not isinstance(values, list) or not values:
            raise fail(f"sweeps.{key}={values!r}: the grid is empty; need a non-empty list of values")
        out[key] = values
    return out


def _resources(value: Any, fail: Any, *, workers: bool = False) -> Resources:
    """``{cpus, gpus}``, and with ``workers=True`` (ablation specs) also ``workers``: the number of DDP processes,
    by default one per GPU when ``gpus`` is a whole number > 1; with several workers, ``gpus`` is 0 or one each."""
    keys = ("cpus", "gpus", "workers") if workers else ("cpus", "gpus")
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise fail(f"resources={value!r}: expected {{cpus: N, gpus: G{', workers: W' if workers else ''}}}")
    for key in value:
        if key not in keys:
            raise fail(f"resources.{key}: unknown key{did_you_mean(key, keys)}")
    cpus, gpus = value.get("cpus", 1), value.get("gpus", 0)
    if not _is_number(cpus) or cpus <= 0:
        raise fail(f"resources.cpus={cpus!r}: need a number > 0")
    if not _is_number(gpus) or gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise fail(f"resources.gpus={gpus!r}: need a fraction in [0, 1] or a whole number of GPUs")
    default_workers = int(gpus) if workers and gpus > 1 else 1
    n = value.get("workers", default_workers)
    _check_int(n, "resources.workers", 1, fail)
    if n > 1 and gpus not in (0, n):
        # each DDP process trains on one GPU (DistributedDataParallel with one device per process)
        raise fail(f"resources.gpus={gpus!r} with resources.workers={n}: each worker trains on exactly one GPU; "
                   f"need gpus: {n} (one per worker) or gpus: 0 (CPU workers, gloo)")
    return Resources(cpus=float(cpus), gpus=float(gpus), workers=n)


def _scheduler(value: Any, fail: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail(f"scheduler={value!r}: expected {{type: asha, grace_period: G, reduction_factor: R, max_t: T}}")
    kind = value.get("type", "fifo")
    if kind not in SCHEDULERS:
        raise _choice(fail, "scheduler.type", kind, SCHEDULERS)
    if kind == "fifo":
        if set(value) - {"type"}:
            raise fail("scheduler: type fifo takes no options")
        return None
    allowed = {"type": None, "grace_period": 1, "reduction_factor": 2, "max_t": 1, "time_attr": None}
    for key in value:
        if key not in allowed:
            raise fail(f"scheduler.{key}: unknown key{did_you_mean(key, allowed, cutoff=0.5)}")
    out = {"type": "asha", "time_attr": value.get("time_attr", "iter")}
    if out["time_attr"] not in TIME_ATTRS:
        raise _choice(fail, "scheduler.time_attr", out["time_attr"], TIME_ATTRS)
    for key in ("grace_period", "reduction_factor", "max_t"):
        if key in value:
            _check_int(value[key], f"scheduler.{key}", allowed[key], fail)
            out[key] = value[key]
    if "max_t" in out and out.get("grace_period", 1) > out["max_t"]:
        raise fail(f"scheduler: grace_period={out['grace_period']} exceeds max_t={out['max_t']}")
    return out


def _stop(value: Any, fail: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise fail(f"stop={value!r}: expected {{iter: N}} or {{METRIC: threshold}}")
    for key, threshold in value.items():
        _check_metric(key, f"stop.{key}", fail)
        if not _is_number(threshold):
            raise fail(f"stop.{key}={threshold!r}: need a finite number")
        if key == "iter":
            _check_int(threshold, "stop.iter", 1, fail)
    return {k: float(v) for k, v in value.items()}


def _check_metric(metric: Any, key: str, fail: Any) -> None:
    """Metric keys as the trainer reports them: iter, train/*, time/*, val/cls_f1, val/<output>/<metric>."""
    if not isinstance(metric, str):
        raise fail(f"{key}={metric!r}: expected a metric name such as val/seg/miou")
    parts = metric.split("/")
    if metric in ("iter", "val/cls_f1") or (parts[0] in ("train", "time") and len(parts) == 2 and parts[1]):
        return
    if parts[0] == "val" and len(parts) == 3 and parts[1] in OUTPUTS and parts[2] in OUTPUT_METRICS:
        return
    if parts[0] == "val" and len(parts) == 3:
        what, choices = ("output", OUTPUTS) if parts[1] not in OUTPUTS else ("metric", OUTPUT_METRICS)
        why = f"unknown {what} '{parts[1 if what == 'output' else 2]}' (one of {', '.join(choices)})"
    else:
        why = (f"not a reported metric (iter, train/<term>, time/<x>, val/cls_f1, "
               f"val/<{'|'.join(OUTPUTS)}>/<{'|'.join(OUTPUT_METRICS)}>)")
    known = ["iter", "val/cls_f1", "time/sec_per_iter", "train/loss",
             *(f"val/{o}/{m}" for o in OUTPUTS for m in OUTPUT_METRICS)]
    raise fail(f"{key}={metric!r}: {why}{did_you_mean(metric.lower(), known)}")


def _choice(fail: Any, key: str, value: Any, choices: tuple[str, ...]) -> Exception:
    return fail(f"{key}={value!r}: must be one of {', '.join(choices)}{did_you_mean(value, choices, cutoff=0.5)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(value: Any, key: str, minimum: int, fail: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise fail(f"{key}={value!r}: need an integer >= {minimum}")
