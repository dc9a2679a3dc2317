"""Declarative ablation specs (``ablations/*.yaml``): parsing, expansion into trials, validation and hashing.

A spec names one experiment (a config file or preset plus dotted overrides), a set of named *conditions* (each just
a set of dotted overrides, e.g. the rows of the paper's Table 3), optional *sweeps* and a list of *seeds*::

    trials = conditions x sweep points x seeds

Every trial is resolved through :func:`more.config.load_config` before anything launches, so a bad key or value
anywhere in the spec fails early with the condition, the sweep point and the dotted key in the message.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from more.config import ConfigError, MoReConfig, get, load_config
from more.config.load import flatten
from more.hints import did_you_mean
from more.yamlio import YamlError, load_yaml

SPEC_KEYS = (
    "name", "description", "experiment", "conditions", "sweeps", "sweep_mode", "seeds", "resources", "max_concurrent",
    "metric", "mode", "scheduler", "stop", "checkpoints", "max_failures", "gpu_hours_per_trial", "paper", "tracking",
)
SWEEP_MODES = ("grid", "one_at_a_time")
MODES = ("max", "min")
SCHEDULERS = ("fifo", "asha")
TIME_ATTRS = ("iter", "training_iteration", "time_total_s")
OUTPUTS = ("cam", "aux_cam", "lam", "fused", "seg")
OUTPUT_METRICS = ("miou", "precision", "recall", "confusion", "miou_present")  # miou_present: i18 (small subsets)
# Direction of the metrics whose "better" is known: a spec asking for the other one is a mistake.
HIGHER_IS_BETTER = {*(f"val/{o}/{m}" for o in OUTPUTS for m in ("miou", "miou_present", "precision", "recall")),
                    "val/cls_f1"}
LOWER_IS_BETTER = {*(f"val/{o}/confusion" for o in OUTPUTS), "train/loss", "time/sec_per_iter"}
DEFAULT_CONDITION = "base"
DDP_DRIVER_CPUS = 0.1  # the Tune side of a multi-worker trial only relays reports (Ray refuses a 0-CPU trial)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


class SpecError(ValueError):
    """A problem in an ablation spec; the message names the spec key (and condition / sweep point) at fault."""


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


@dataclass(frozen=True)
class Trial:
    """One training run of an ablation: the experiment's overrides, then the condition's, the sweep point, the seed."""

    name: str  # <condition>[-<key=value>...]-s<seed>, filesystem safe
    condition: str
    sweep: dict[str, Any]  # the sweep point (empty for the base point)
    seed: int
    overrides: dict[str, Any]  # everything above merged in that order, including train.seed


@dataclass
class AblationSpec:
    """A parsed spec. ``source`` is what :func:`load_config` receives: an absolute YAML path or a preset name."""

    name: str
    source: str
    overrides: dict[str, Any]
    conditions: dict[str, dict[str, Any]]
    sweeps: dict[str, list[Any]]
    sweep_mode: str = "grid"
    seeds: list[int] = field(default_factory=lambda: [0])
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    metric: str = "val/seg/miou"
    mode: str = "max"
    scheduler: dict[str, Any] | None = None
    stop: dict[str, float] = field(default_factory=dict)
    keep_checkpoints: int = 2
    max_failures: int = 1
    gpu_hours_per_trial: float | None = None
    description: str = ""
    paper: Any = None
    tracking: Any = None
    path: Path | None = None  # the spec file, when read from one


# ------------------------------------------------------------------------------------------------- reading


def read_spec_yaml(text: str, *, where: str = "spec") -> dict[str, Any]:
    """Parse spec YAML safely, refusing duplicate keys at any depth (e.g. two conditions with one name)."""
    try:
        data = load_yaml(text, where=where)
    except YamlError as exc:
        raise SpecError(str(exc)) from None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_spec(path: str | Path) -> AblationSpec:
    """Read and check an ablation spec file (not yet expanded: see :func:`expand`)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    return parse_spec(read_spec_yaml(p.read_text(), where=str(p)), path=p)


def parse_spec(data: dict[str, Any], *, path: Path | None = None) -> AblationSpec:
    """Check the spec's own keys and types (trials are checked by :func:`expand`)."""
    where = f"{path}: " if path else ""

    def fail(msg: str) -> SpecError:
        return SpecError(where + msg)

    for key in data:
        if key not in SPEC_KEYS:
            hint = did_you_mean(key, SPEC_KEYS, otherwise=f" (known keys: {', '.join(SPEC_KEYS)})")
            raise fail(f"unknown spec key '{key}'{hint}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(f"name={name!r}: need a name of letters, digits and underscores (it names the experiment dir)")

    experiment = data.get("experiment")
    if not isinstance(experiment, dict) or "config" not in experiment:
        raise fail("experiment: need a mapping with 'config' (experiments/X.yaml or a preset) and optional 'overrides'")
    for key in experiment:
        if key not in ("config", "overrides"):
            raise fail(f"experiment.{key}: unknown key (use 'config' and 'overrides')")
    source = _resolve_source(experiment["config"], path, fail)
    overrides = _override_map(experiment.get("overrides"), "experiment.overrides", fail)

    raw_conditions = data.get("conditions")
    for key in ("conditions", "sweeps", "seeds", "resources", "scheduler", "stop", "checkpoints", "tracking", "paper"):
        if key in data and data[key] is None:  # `conditions:` with nothing after it is a mistake, not the defaults
            raise fail(f"{key}: has no value; remove the key or give it one")
    if raw_conditions is None:
        conditions = {DEFAULT_CONDITION: {}}
    elif isinstance(raw_conditions, dict) and raw_conditions:
        conditions = {}
        for cname, cover in raw_conditions.items():
            if not isinstance(cname, str) or not _NAME_RE.match(cname):
                raise fail(f"conditions: name {cname!r} must be letters, digits and underscores")
            conditions[cname] = _override_map(cover, f"conditions.{cname}", fail)
    else:
        raise fail(f"conditions={raw_conditions!r}: need a non-empty mapping of name -> dotted overrides")

    sweeps = _sweeps(data.get("sweeps"), fail)
    sweep_mode = data.get("sweep_mode", "grid")
    if sweep_mode not in SWEEP_MODES:
        raise _choice(fail, "sweep_mode", sweep_mode, SWEEP_MODES)
    if sweep_mode == "one_at_a_time" and not sweeps:
        raise fail("sweep_mode=one_at_a_time needs 'sweeps'")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise fail(f"seeds={seeds!r}: the grid is empty; need a non-empty list of integer seeds")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise fail(f"seeds={seeds!r}: need distinct integers >= 0")
    seeded = [where_ for where_, block in [("sweeps", sweeps), ("experiment.overrides", overrides),
                                           *((f"conditions.{c}", o) for c, o in conditions.items())]
              if "train.seed" in block]
    if seeded:
        raise fail(f"{seeded[0]}: sets train.seed, which 'seeds:' sets for every trial (it would be overridden "
                   f"silently); list the seeds under 'seeds:' instead")

    metric = data.get("metric", "val/seg/miou")
    mode = data.get("mode", "max")
    _check_metric(metric, "metric", fail)
    if mode not in MODES:
        raise _choice(fail, "mode", mode, MODES)
    if (mode == "min" and metric in HIGHER_IS_BETTER) or (mode == "max" and metric in LOWER_IS_BETTER):
        raise fail(f"mode={mode!r} for metric {metric!r}: {'higher' if mode == 'min' else 'lower'} is better; "
                   f"use mode: {'max' if mode == 'min' else 'min'}")

    checkpoints = data.get("checkpoints") or {}
    if not isinstance(checkpoints, dict) or set(checkpoints) - {"keep"}:
        raise fail(f"checkpoints={checkpoints!r}: expected {{keep: K}}")
    keep = checkpoints.get("keep", 2)
    max_concurrent = data.get("max_concurrent")
    max_failures = data.get("max_failures", 1)
    gpu_hours = data.get("gpu_hours_per_trial")
    _check_int(keep, "checkpoints.keep", 1, fail)
    if max_concurrent is not None:
        _check_int(max_concurrent, "max_concurrent", 1, fail)
    _check_int(max_failures, "max_failures", -1, fail)
    if gpu_hours is not None and (not _is_number(gpu_hours) or gpu_hours < 0):
        raise fail(f"gpu_hours_per_trial={gpu_hours!r}: need a number >= 0")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description: expected text")

    return AblationSpec(
        name=name, source=source, overrides=overrides, conditions=conditions, sweeps=sweeps, sweep_mode=sweep_mode,
        seeds=list(seeds), resources=_resources(data.get("resources"), fail, workers=True),
        max_concurrent=max_concurrent,
        metric=metric, mode=mode, scheduler=_scheduler(data.get("scheduler"), fail), stop=_stop(data.get("stop"), fail),
        keep_checkpoints=keep, max_failures=max_failures, gpu_hours_per_trial=gpu_hours, description=description,
        paper=_paper(data.get("paper"), fail), tracking=_tracking(data.get("tracking"), fail), path=path,
    )


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


def _choice(fail: Any, key: str, value: Any, choices: tuple[str, ...]) -> SpecError:
    return fail(f"{key}={value!r}: must be one of {', '.join(choices)}{did_you_mean(value, choices, cutoff=0.5)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(value: Any, key: str, minimum: int, fail: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise fail(f"{key}={value!r}: need an integer >= {minimum}")


# ----------------------------------------------------------------------------------------------- expansion


def expand(spec: AblationSpec) -> list[Trial]:
    """All trials (conditions x sweep points x seeds), each validated through :func:`load_config`.

    Raises:
        SpecError: naming the condition, the sweep point and the config error (dotted key and value).
    """
    _resolve(spec, spec.overrides, "experiment")
    trials: list[Trial] = []
    for cname, cover in spec.conditions.items():
        base_overrides = {**spec.overrides, **cover}
        base = _resolve(spec, base_overrides, f"condition '{cname}'")
        for point in sweep_points(spec, base):
            where = f"condition '{cname}', sweep point {point}"
            for seed in spec.seeds:
                overrides = {**base_overrides, **point, "train.seed": seed}
                _resolve(spec, overrides, where if point else f"condition '{cname}'")
                trials.append(Trial(trial_name(cname, point, seed), cname, dict(point), seed, overrides))
    names = [t.name for t in trials]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise SpecError(f"trial names collide after making them filesystem safe: {', '.join(clashes)}")
    return trials


def sweep_points(spec: AblationSpec, base: MoReConfig) -> list[dict[str, Any]]:
    """grid: the cartesian product of the sweeps. one_at_a_time: the base point, then each key varied alone
    (values equal to the base config's are skipped: they are the base point)."""
    if not spec.sweeps:
        return [{}]
    if spec.sweep_mode == "grid":
        keys = list(spec.sweeps)
        return [dict(zip(keys, values)) for values in itertools.product(*(spec.sweeps[k] for k in keys))]
    points: list[dict[str, Any]] = [{}]
    for key, values in spec.sweeps.items():
        try:
            current = get(base, key)
        except AttributeError:
            current = None  # an unknown key: load_config names it when the point is resolved
        points.extend({key: v} for v in values if v != current)
    return points


def trial_name(condition: str, point: dict[str, Any], seed: int) -> str:
    """``<condition>-<key=value>...-s<seed>`` with anything but ``[A-Za-z0-9._+=-]`` replaced by ``_``."""
    parts = [condition] + [f"{key.split('.')[-1]}={_value_text(v)}" for key, v in point.items()] + [f"s{seed}"]
    return _UNSAFE.sub("_", "-".join(parts))


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _resolve(spec: AblationSpec, overrides: dict[str, Any], where: str) -> MoReConfig:
    try:
        return load_config(spec.source, overrides)
    except ConfigError as exc:
        raise SpecError(f"{where}: {exc}") from None


def trial_config(spec: AblationSpec, trial: Trial) -> MoReConfig:
    """The validated config of one trial."""
    return _resolve(spec, trial.overrides, f"trial '{trial.name}'")


# ------------------------------------------------------------------------------------------------- hashing


def spec_hash(spec: AblationSpec, trials: list[Trial]) -> str:
    """12 hex digits of sha256 over what decides the results: the config file's content, the expanded trials,
    resources, metric/mode, scheduler and stop rule. Free-form blocks (paper, tracking), concurrency, retries and
    checkpoint retention do not change it, so they may be edited before a ``--resume``."""
    source = Path(spec.source)
    config_id = {"preset": spec.source} if not source.is_file() else {
        "file": source.name, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    canonical = {
        "config": config_id,
        "trials": sorted((asdict(t) for t in trials), key=lambda t: t["name"]),  # the order of conditions is free
        "resources": spec.resources.hashed(),
        "metric": spec.metric,
        "mode": spec.mode,
        "scheduler": spec.scheduler,
        "stop": spec.stop,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
