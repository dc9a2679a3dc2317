"""Declarative ablation specs (``ablations/*.yaml``): parsing, expansion into trials, validation and hashing.

A spec names one experiment (a config file or preset plus dotted overrides), a set of named *conditions* (each just
a set of dotted overrides, e.g. the rows of the paper's Table 3), optional *sweeps* and a list of *seeds*::

    trials = conditions x sweep points x seeds

Every trial is resolved through :func:`more.config.load_config` before anything launches, so a bad key or value
anywhere in the spec fails early with the condition, the sweep point and the dotted key in the message.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from more.config import ConfigError, MoReConfig, get, load_config
from more.harness.spec_blocks import (  # noqa: F401 -- Resources, OUTPUTS, DDP_DRIVER_CPUS and the checks: re-exported
    DDP_DRIVER_CPUS,
    OUTPUT_METRICS,
    OUTPUTS,
    SCHEDULERS,
    TIME_ATTRS,
    Resources,
    _check_int,
    _check_metric,
    _choice,
    _is_number,
    _override_map,
    _paper,
    _resolve_source,
    _resources,
    _scheduler,
    _stop,
    _sweeps,
    _tracking,
)
from more.hints import did_you_mean
from more.yamlio import YamlError, load_yaml

SPEC_KEYS = (
    "name", "description", "experiment", "conditions", "sweeps", "sweep_mode", "seeds", "resources", "max_concurrent",
    "metric", "mode", "scheduler", "stop", "checkpoints", "max_failures", "gpu_hours_per_trial", "paper", "tracking",
)
SWEEP_MODES = ("grid", "one_at_a_time")
MODES = ("max", "min")
# Direction of the metrics whose "better" is known: a spec asking for the other one is a mistake.
HIGHER_IS_BETTER = {*(f"val/{o}/{m}" for o in OUTPUTS for m in ("miou", "miou_present", "precision", "recall")),
                    "val/cls_f1"}
LOWER_IS_BETTER = {*(f"val/{o}/confusion" for o in OUTPUTS), "train/loss", "time/sec_per_iter"}
DEFAULT_CONDITION = "base"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


class SpecError(ValueError):
    """A problem in an ablation spec; the message names the spec key (and condition / sweep point) at fault."""


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
    # each expanded trial's resolved config (expand fills it; trial_config reads it): resolving a config takes a few
    # ms, and a launch reads every trial's config several times (checks, identities, Tune params)
    configs: dict[str, MoReConfig] = field(default_factory=dict, repr=False, compare=False)


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



# ----------------------------------------------------------------------------------------------- expansion


def expand(spec: AblationSpec, *, validate: bool = True) -> list[Trial]:
    """All trials (conditions x sweep points x seeds), each validated through :func:`load_config`.

    Args:
        validate: False lists the trials without resolving each one's config (each condition's base is still
            resolved): for readers of an experiment that a launch of the spec validated (``status``).

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
            resolved = None
            for seed in spec.seeds:
                overrides = {**base_overrides, **point, "train.seed": seed}
                name = trial_name(cname, point, seed)
                if validate and resolved is None:
                    resolved = spec.configs[name] = _resolve(spec, overrides, where if point else
                                                             f"condition '{cname}'")
                elif validate:
                    # the seeds of a point differ in train.seed alone: a copy costs a fraction of a resolution
                    spec.configs[name] = copy.deepcopy(resolved)
                    spec.configs[name].train.seed = seed
                trials.append(Trial(name, cname, dict(point), seed, overrides))
    counts = collections.Counter(t.name for t in trials)
    clashes = sorted(n for n, c in counts.items() if c > 1)
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
    """The validated config of one trial (resolved once, by :func:`expand`; read it, do not change it)."""
    cached = spec.configs.get(trial.name)
    if cached is not None:
        return cached
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
