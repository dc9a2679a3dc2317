"""Search with training: Ray Tune trials sampled by ``OptunaSearch`` from the spec's define-by-run space, pruned by
ASHA on the validation metric, several at a time.

- The space is :meth:`more.search.space.SearchSpace.sample`, so constraints such as ``pseudo.par_bg_low <
  pseudo.par_bg_high`` hold in every trial. The sampler is ``TPESampler(seed)``.
- Each trial is the harness's trainable (:func:`more.harness.tune_runner.run_trial`): flat dict -> config ->
  ``train(cfg, report=tune.report)``, named ``trial_NNNN`` after its Optuna trial number.
- Concurrency: Tune creates at most ``TUNE_MAX_PENDING_TRIALS_PG`` pending trials for a searcher (1 unless set), which
  can keep an Optuna search at one trial at a time (ray-project/ray#46965, optuna/optuna#5611). It is raised to
  ``max_concurrent`` here, and ``max_concurrent_trials`` caps the running trials.
- The Optuna study lives in a journal file (or an RDB) handed to ``OptunaSearch(storage=..., study_name=...)``;
  ``--resume`` starts a new Tune run on the same study (Optuna's numbering continues; trials an interrupted driver
  left RUNNING are marked FAIL: on an RDB with heartbeats only those whose driver stopped beating,
  :mod:`more.search.storage`). A trial ASHA stops early is told to Optuna with its last value (``COMPLETE``, as
  ``OptunaSearch`` does); the tables mark it ``stopped_early``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from more.search.spec import SearchSpec

NUMBER_KEY = "_optuna_trial"
PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def search_trial(config: dict[str, Any], *, source: str, overrides: dict[str, Any], pinned: dict[str, Any]) -> None:
    """The Tune trainable of one Optuna trial: the harness adapter with the experiment's overrides, the sampled
    values and the runtime pins (absolute data root, thread count)."""
    from more.harness.tune_runner import CONDITION_KEY, NAME_KEY, PARAM_KEY, RUN_DIR_KEY, SOURCE_KEY, run_trial

    params = dict(config)
    number = int(params.pop(NUMBER_KEY))
    run_trial({PARAM_KEY: {SOURCE_KEY: source, CONDITION_KEY: "search", RUN_DIR_KEY: "", **overrides, **params,
                           **pinned, NAME_KEY: f"trial_{number:04d}"}})


def _pins(spec: SearchSpec) -> dict[str, Any]:
    from more.config import load_config

    cfg = load_config(spec.config, spec.overrides)
    pinned: dict[str, Any] = {"data.root": cfg.data.root}
    if cfg.runtime.num_threads == 0:
        pinned["runtime.num_threads"] = max(1, int(spec.resources.cpus))
    return pinned


def _base_overlay(spec: SearchSpec) -> dict[str, Any]:
    """``preset`` or the experiment file's own keys, then the experiment overrides (for ``best.yaml``)."""
    from more.config.load import flatten, read_yaml

    if spec.config and Path(spec.config).is_file():
        data = read_yaml(spec.config)
        extra = data.pop("overrides", None) or {}
        base = flatten(data)
        if isinstance(extra, dict):
            base.update(flatten(extra))
        else:
            from more.config.load import parse_overrides

            base.update(parse_overrides(extra))
    else:
        base = {"preset": spec.config}
    return {**base, **spec.overrides}


class DefineByRun:
    """The spec's space as OptunaSearch's define-by-run function; a class, since Tune pickles the searcher."""

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        from more.search.storage import DriverHeartbeat

        DriverHeartbeat.asked(trial)  # this driver beats for it until it is told (RDB storage with heartbeats)
        self.space.sample(trial)  # OptunaSearch captures the suggested values
        return {NUMBER_KEY: trial.number}  # names the Tune trial after the Optuna trial


def build_searcher(spec: SearchSpec, *, storage: Any, study_name: str, seed_offset: int = 0) -> Any:
    """``OptunaSearch`` over the spec's define-by-run space, on the persistent study."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=DefineByRun(spec.space), metric=spec.metric, mode=spec.mode, storage=storage,
                        study_name=study_name, sampler=optuna.samplers.TPESampler(seed=spec.seed + seed_offset))


def run_training(spec: SearchSpec, args: argparse.Namespace) -> int:
    """The ``python -m more search`` driver for ``kind: training``."""
    import optuna

    from more.harness.local_ray import ray_runtime
    from more.outputs import own_dir
    from more.preflight import PreflightError, cluster_refusal
    from more.search.cached import finished_trials
    from more.search.report import log_study, write_outputs
    from more.search.spec import search_hash
    from more.search.storage import DriverHeartbeat
    from more.search.study import open_study

    digest = search_hash(spec)
    opened = open_study(spec, args, digest, reads={"data.root": _pins(spec)["data.root"]})
    if isinstance(opened, str):
        print(opened, file=sys.stderr)
        return 2
    study_name, out, storage, study, n_trials = opened
    done = finished_trials(study) if study is not None else 0
    own_dir(out, command="search")
    if spec.path is not None:
        (out / "spec.yaml").write_text(spec.path.read_text())
    tune_root = out / "tune"
    run_name = f"run_{len(list(tune_root.glob('run_*'))) if tune_root.is_dir() else 0:02d}"
    spans: dict[int, dict[str, Any]] = {}
    if n_trials > 0:
        os.environ[PENDING_ENV] = str(max(spec.max_concurrent, int(os.environ.get(PENDING_ENV, "1") or 1)))
        num_cpus = None if args.address else max(1, int(round(spec.max_concurrent * spec.resources.cpus)))
        with ray_runtime(args.address, num_cpus=num_cpus) as runtime:
            problem = cluster_refusal(spec.resources, embedded=runtime.embedded)
            if problem:
                raise PreflightError(f"resources: {problem}")
            _log(f"study {study_name}: {n_trials} trial(s), {spec.max_concurrent} at a time, on "
                 f"{'local Ray ' if runtime.embedded else 'Ray cluster '}{runtime.address} -> {out}")
            with DriverHeartbeat(storage):  # a killed driver's trials are failed by the next driver (RDB storage)
                results = _fit(spec, storage=storage, study_name=study_name, seed_offset=done, n_trials=n_trials,
                               storage_path=str(tune_root), run_name=run_name)
        spans = trial_spans(results, max_iters=_max_iters(spec))
    else:
        print(f"nothing to run: the study already has {spec.trials} finished trials (--trials N runs N more)")
    study = optuna.load_study(study_name=study_name, storage=storage)
    extra = {n: {k: v for k, v in s.items() if k in ("iterations", "stopped_early")} for n, s in spans.items()}
    best = write_outputs(study, out, base=_base_overlay(spec), title=f"{study_name}: {spec.metric}", extra=extra)
    if spans:  # start/end/iterations per trial of this Tune run
        (out / f"{run_name}_trials.json").write_text(json.dumps(spans, indent=1) + "\n")
    if not args.no_tracking:
        metrics = {n: {**s.get("metrics", {}), **extra.get(n, {})} for n, s in spans.items()}
        parent, created = log_study(study, out, spec_name=spec.name, digest=digest,
                                    spec_text=spec.path.read_text() if spec.path else "", metric=spec.metric,
                                    tracking_uri=args.tracking_uri, extra=metrics)
        if parent:
            _log(f"MLflow: parent run {parent}, {created} trial run(s) logged")
    stopped = sum(1 for s in spans.values() if s["stopped_early"])
    failed = sum(1 for s in spans.values() if s["error"])
    print(f"{len(spans)} trial(s) this run: {stopped} stopped early by ASHA, {failed} failed")
    if best:
        print(f"best trial {best['trial']}: {spec.metric} {best['value']:.4f} with "
              + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))
    print(f"results in {out}: trials.csv, trials.md, importances.*, best.yaml")
    return 1 if failed else 0


def _fit(spec: SearchSpec, *, storage: Any, study_name: str, seed_offset: int, n_trials: int, storage_path: str,
         run_name: str) -> Any:
    from ray import tune

    scheduler = None
    if spec.scheduler:
        max_t = spec.scheduler.get("max_t") or _max_iters(spec)
        scheduler = tune.schedulers.ASHAScheduler(
            metric=spec.metric, mode=spec.mode, time_attr=spec.scheduler["time_attr"], max_t=max_t,
            grace_period=spec.scheduler.get("grace_period", 1),
            reduction_factor=spec.scheduler.get("reduction_factor", 4))
    trainable = tune.with_parameters(search_trial, source=spec.config, overrides=spec.overrides, pinned=_pins(spec))
    tuner = tune.Tuner(
        tune.with_resources(trainable, spec.resources.as_ray()),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec, storage=storage, study_name=study_name, seed_offset=seed_offset),
            scheduler=scheduler, num_samples=n_trials, max_concurrent_trials=spec.max_concurrent,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name, reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage_path, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        ),
    )
    return tuner.fit()


def _trial_name(trial: Any) -> str:
    number = trial.config.get(NUMBER_KEY)
    return f"trial_{int(number):04d}" if number is not None else trial.trial_id


def _max_iters(spec: SearchSpec) -> int:
    from more.config import load_config

    return load_config(spec.config, spec.overrides).train.max_iters


def trial_spans(results: Any, *, max_iters: int) -> dict[int, dict[str, Any]]:
    """Per Optuna trial number: start and end (epoch seconds), iterations run, whether it was stopped before its
    last iteration, its error and its last reported metrics."""
    spans: dict[int, dict[str, Any]] = {}
    for result in results:
        number = int(result.config[NUMBER_KEY])
        df = result.metrics_dataframe
        iters = int(result.metrics.get("iter", 0)) if result.metrics else 0
        start = end = None
        if df is not None and len(df):
            end = float(df["timestamp"].iloc[-1])
            start = float(df["timestamp"].iloc[0] - df["time_total_s"].iloc[0])
        spans[number] = {
            "start": start, "end": end, "iterations": iters,
            "stopped_early": bool(result.error is None and iters and iters < max_iters),
            "error": str(result.error)[:500] if result.error else "",
            "metrics": {k: float(v) for k, v in (result.metrics or {}).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and k.split("/")[0] in ("val", "train", "time") and "/iou/" not in k
                        and "/confusion/" not in k},
        }
    return spans
