"""Search specs (``experiments/search_*.yaml``): an Optuna study over config keys, declared under ``search:``.

Two kinds share the format (see the shipped files for complete examples)::

    search:
      name: seed_thresholds_synthetic
      kind: cached                 # cached: thresholds over score maps of one checkpoint (no retraining)
      tuning_split: train          # the split the thresholds are fitted on ...
      report_split: val            # ... which must differ from the split results are reported on
      source: cam                  # cam | lam score maps
      space: {eval.bkg_thre: {type: float, low: 0.05, high: 0.95}}
      trials: 300
      seed: 0

    search:
      name: training_synthetic
      kind: training               # every trial trains (Ray Tune + OptunaSearch, ASHA pruning)
      experiment: {config: experiments/synthetic.yaml, overrides: {train.max_iters: 30}}
      space: {pseudo.par_bg_low: {...}, pseudo.par_bg_high: {...}}
      constraints: [pseudo.par_bg_low + 0.05 < pseudo.par_bg_high]
      metric: val/seg/miou
      scheduler: {type: asha, grace_period: 10, reduction_factor: 2}
      max_concurrent: 2

Every searched key is checked against the config schema (both bounds, every choice) before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from more.config import ConfigError, load_config
from more.harness.spec import (
    Resources,
    SpecError,
    _check_metric,
    _resolve_source,
    _resources,
    _scheduler,
    _tracking,
    read_spec_yaml,
)
from more.hints import did_you_mean
from more.search.space import SearchSpace, SpaceError, parse_space

KINDS = ("cached", "training")
MODES = ("max", "min")
SOURCES = ("cam", "lam")
OBJECTIVES = ("seeds",)
CACHED_KEYS = ("eval.bkg_thre",)  # what a cached search over seed maps can change without recomputing them
COMMON_KEYS = ("name", "kind", "description", "space", "constraints", "trials", "seed", "mode", "experiment")
CACHED_ONLY = ("tuning_split", "report_split", "source", "scales", "stride", "objective")
TRAINING_ONLY = ("metric", "resources", "max_concurrent", "scheduler", "max_failures", "tracking")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


@dataclass
class SearchSpec:
    """A parsed search spec. ``config`` is what :func:`load_config` receives (absolute YAML path or preset); a cached
    search takes its config from the checkpoint instead, and ``overrides`` are applied on top of it."""

    name: str
    kind: str
    space: SearchSpace
    trials: int = 100
    seed: int = 0
    mode: str = "max"
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # cached
    tuning_split: str = "train"
    report_split: str | None = None
    source: str = "cam"
    scales: list[float] | None = None
    stride: int = 1
    objective: str = "seeds"
    # training
    metric: str = "miou"
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 1
    scheduler: dict[str, Any] | None = None
    max_failures: int = 0
    tracking: Any = None
    path: Path | None = None


def load_search_spec(path: str | Path) -> SearchSpec:
    """Read and check a search spec file (the mapping under its top-level ``search`` key)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"search spec file not found: {p}")
    data = read_spec_yaml(p.read_text(), where=str(p))
    if set(data) != {"search"}:
        raise SpecError(f"{p}: expected one top-level key 'search' (got {', '.join(map(str, data)) or 'none'})")
    return parse_search_spec(data["search"], path=p)


def parse_search_spec(data: Any, *, path: Path | None = None) -> SearchSpec:
    """Check a ``search`` mapping.

    Raises:
        SpecError: naming the spec key (or the searched dotted key) at fault.
    """
    where = f"{path}: " if path else ""

    def fail(text: str) -> SpecError:
        return SpecError(where + text)

    if not isinstance(data, dict):
        raise fail("search: expected a mapping")
    kind = data.get("kind")
    if kind not in KINDS:
        raise fail(f"search.kind={kind!r}: must be one of {', '.join(KINDS)}")
    allowed = COMMON_KEYS + (CACHED_ONLY if kind == "cached" else TRAINING_ONLY)
    for key in data:
        if key not in allowed:
            other = key in (TRAINING_ONLY if kind == "cached" else CACHED_ONLY)
            hint = (f" (only for kind {'training' if kind == 'cached' else 'cached'})" if other else
                    did_you_mean(key, allowed, otherwise=f" (known keys: {', '.join(allowed)})"))
            raise fail(f"unknown search key '{key}'{hint}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(f"name={name!r}: need letters, digits and underscores (it names the output folder)")

    config, overrides = _experiment(data.get("experiment"), kind, path, fail)
    try:
        space = parse_space(data.get("space"), data.get("constraints"))
    except SpaceError as exc:
        raise fail(str(exc)) from None
    spec = SearchSpec(name=name, kind=kind, space=space, config=config, overrides=overrides, path=path,
                      description=str(data.get("description", "")))
    spec.trials = _int(data.get("trials", 100), "trials", 1, fail)
    spec.seed = _int(data.get("seed", 0), "seed", 0, fail)
    spec.mode = data.get("mode", "max")
    if spec.mode not in MODES:
        raise fail(f"mode={spec.mode!r}: must be one of {', '.join(MODES)}")
    if kind == "cached":
        _cached_fields(spec, data, fail)
    else:
        _training_fields(spec, data, fail)
    _check_keys(spec, fail)
    return spec


def _experiment(value: Any, kind: str, path: Path | None, fail: Any) -> tuple[str | None, dict[str, Any]]:
    from more.harness.spec import _override_map

    if value is None:
        if kind == "training":
            raise fail("experiment: a training search needs {config: experiments/X.yaml or a preset, overrides: ...}")
        return None, {}
    if not isinstance(value, dict) or set(value) - {"config", "overrides"}:
        raise fail("experiment: expected a mapping with 'config' and optional 'overrides'")
    overrides = _override_map(value.get("overrides"), "experiment.overrides", fail)
    if "config" not in value:
        if kind == "training":
            raise fail("experiment.config: missing (a YAML path or a preset name)")
        return None, overrides
    return _resolve_source(value["config"], path, fail), overrides


def _cached_fields(spec: SearchSpec, data: dict[str, Any], fail: Any) -> None:
    spec.tuning_split = data.get("tuning_split", "train")
    spec.report_split = data.get("report_split")
    for key, value in (("tuning_split", spec.tuning_split), ("report_split", spec.report_split)):
        if value is not None and (not isinstance(value, str) or not value):
            raise fail(f"{key}={value!r}: need a split name such as train or val")
    spec.source = data.get("source", "cam")
    if spec.source not in SOURCES:
        raise fail(f"source={spec.source!r}: must be one of {', '.join(SOURCES)}")
    scales = data.get("scales")
    if scales is not None and (not isinstance(scales, list) or not scales or not all(is_number(s) and s > 0
                                                                                        for s in scales)):
        raise fail(f"scales={scales!r}: need a non-empty list of positive numbers")
    spec.scales = [float(s) for s in scales] if scales else None
    spec.stride = _int(data.get("stride", 1), "stride", 1, fail)
    spec.objective = data.get("objective", "seeds")
    if spec.objective not in OBJECTIVES:
        raise fail(f"objective={spec.objective!r}: must be one of {', '.join(OBJECTIVES)}")
    spec.metric = "miou"
    for key in spec.space.keys:
        if key not in CACHED_KEYS:
            raise fail(f"space.{key}: a cached search over seed maps can only tune {', '.join(CACHED_KEYS)} "
                       f"(other keys change the maps or need training: use kind: training)")


def _training_fields(spec: SearchSpec, data: dict[str, Any], fail: Any) -> None:
    spec.metric = data.get("metric", "val/seg/miou")
    _check_metric(spec.metric, "metric", fail)
    spec.resources = _resources(data.get("resources"), fail)
    spec.max_concurrent = _int(data.get("max_concurrent", 1), "max_concurrent", 1, fail)
    spec.scheduler = _scheduler(data.get("scheduler"), fail)
    spec.max_failures = _int(data.get("max_failures", 0), "max_failures", 0, fail)
    spec.tracking = _tracking(data.get("tracking"), fail)


def _check_keys(spec: SearchSpec, fail: Any) -> None:
    """Every searched key must exist and accept both bounds (or every choice)."""
    base = spec.config or "voc"
    for p in spec.space.params:
        values = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for value in values:
            try:
                load_config(base, {**spec.overrides, p.key: value})
            except ConfigError as exc:
                raise fail(f"space.{p.key}: {exc}") from None


def _int(value: Any, key: str, minimum: int, fail: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise fail(f"{key}={value!r}: need an integer >= {minimum}")
    return value


def search_hash(spec: SearchSpec, *, extra: dict[str, Any] | None = None) -> str:
    """12 hex digits over what decides a trial's value: the config (file content or preset), overrides, space,
    constraints, seed, metric and the kind's fields (``extra``: e.g. the checkpoint's digest). ``trials`` and the
    concurrency are outside it, so a study can be continued with more trials."""
    config_id: dict[str, Any] = {"preset": spec.config}
    if spec.config and Path(spec.config).is_file():
        config_id = {"file": Path(spec.config).name, "sha256": file_digest(spec.config)}
    fields = asdict(spec)
    fields["space"] = {"params": sorted(fields["space"]["params"], key=lambda p: p["key"]),  # spec order is free
                       "constraints": sorted(fields["space"]["constraints"], key=str)}
    for key in ("trials", "max_concurrent", "max_failures", "tracking", "path", "description", "config", "name"):
        fields.pop(key)
    text = json.dumps({"config": config_id, **fields, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file (streamed), e.g. to key a cache by checkpoint content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
