"""Ray Tune side of an ablation: the trainable adapter, the Tuner (new or restored) and the experiment folder.

The trainable is a thin adapter: a flat dict (``_source`` + dotted overrides) -> :func:`more.config.load_config`
-> :func:`more.train.train` with a ``report`` callable that forwards every evaluation to ``tune.report`` together
with the trainer's checkpoint folder. A restarted trial (retry after a failure, or ``--resume``) continues from the
newest checkpoint of its own run folder, else ``tune.get_checkpoint()``, which the trainer resumes exactly. With
``resources.workers`` > 1 the adapter trains through Ray Train's ``TorchTrainer`` instead and relays rank 0's
reports (:mod:`more.harness.ddp`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import ray
from ray import tune

from more.config import load_config
from more.harness.disk_full import disk_full_guard, refuse_full_disk_retry
from more.harness.spec import LOWER_IS_BETTER, AblationSpec, Resources, Trial, trial_config
from more.harness.trial_files import (
    checkpoint_iteration,
    evaluation_at,
    inject_fault,
    newest_valid_checkpoint,
    seed_from_earlier,
    write_identity,
)

PARAM_KEY = "trial"  # the Tune param space is {"trial": grid_search([flat dict per trial])}
SOURCE_KEY, NAME_KEY, CONDITION_KEY, RUN_DIR_KEY = "_source", "_trial", "_condition", "_run_dir"
TRACKING_KEY = "_tracking"  # {uri, parent, spec_name, spec_hash, seed, sweep, overrides}: the trial's MLflow identity
WORKERS_KEY = "_workers"  # {cpus, gpus, workers} when a trial trains on several DDP processes (absent otherwise)
IDENTITY_KEY = "_identity"  # the trial's content key etc. (more.harness.identity.TrialIdentity.as_dict())
CONTINUE_KEY = "_continue"  # {checkpoint, run_dir} of an earlier result this trial trains on from
DIVERGED_FILE = "diverged.json"


# ------------------------------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class ExperimentStore:
    """``<storage>/<spec name>-<hash>``: a local absolute path or a URI (``s3://...``), read through pyarrow."""

    storage: str
    name: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.storage

    @property
    def path(self) -> str:
        return os.path.join(self.storage, self.name) if self.is_local else f"{self.storage.rstrip('/')}/{self.name}"

    def _fs(self) -> tuple[Any, str]:
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.storage
        return pyarrow.fs.FileSystem.from_uri(self.storage)

    def read_text(self, relative: str, *, name: str | None = None) -> str | None:
        fs, root = self._fs()
        try:
            with fs.open_input_stream(f"{root}/{name or self.name}/{relative}") as fh:
                return fh.read().decode()
        except (FileNotFoundError, OSError):
            return None

    def write_text(self, relative: str, text: str) -> str:
        """Write atomically where the filesystem allows it (local: temporary name, then rename)."""
        fs, root = self._fs()
        target = f"{root}/{self.name}/{relative}"
        fs.create_dir(f"{root}/{self.name}", recursive=True)
        tmp = target + ".tmp"
        with fs.open_output_stream(tmp) as fh:
            fh.write(text.encode())
        fs.move(tmp, target)
        return target

    def siblings(self, prefix: str) -> list[str]:
        """Experiment folders in the storage named ``<prefix>*`` (other hashes of the same spec name)."""
        import pyarrow.fs

        fs, root = self._fs()
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                      and i.base_name.startswith(prefix) and i.base_name != self.name)


# ---------------------------------------------------------------------------------------------- trainable


def trial_params(spec: AblationSpec, trial: Trial, store: ExperimentStore,
                 tracking: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat dict one trial's adapter receives.

    Besides the trial's overrides it pins what must not depend on the worker's working directory (Tune moves it
    into the trial folder): the dataset root and weights as absolute paths, and torch's thread count to the
    trial's CPU reservation (unless the experiment sets it). These are runtime facts, outside the spec hash.
    ``extra`` adds :data:`IDENTITY_KEY` / :data:`CONTINUE_KEY` entries (see :mod:`more.harness.launch`).
    """
    cfg = trial_config(spec, trial)
    pinned: dict[str, Any] = {"data.root": cfg.data.root}
    if cfg.data.labels_file:
        pinned["data.labels_file"] = cfg.data.labels_file
    weights = Path(cfg.model.pretrained).expanduser()
    if cfg.model.pretrained and not weights.is_absolute() and weights.is_file():
        pinned["model.pretrained"] = str(weights.resolve())
    if cfg.runtime.num_threads == 0:
        pinned["runtime.num_threads"] = max(1, int(spec.resources.cpus))
    run_dir = os.path.join(store.path, trial.name, "run") if store.is_local else ""
    # the name goes last: Tune's progress table shows the tail of this dict in its "trial" column
    track = {**tracking, "seed": trial.seed, "sweep": dict(trial.sweep), "overrides": dict(trial.overrides)} \
        if tracking else {}
    workers = {WORKERS_KEY: asdict(spec.resources)} if spec.resources.workers > 1 else {}
    return {SOURCE_KEY: spec.source, CONDITION_KEY: trial.condition, RUN_DIR_KEY: run_dir, TRACKING_KEY: track,
            **workers, **(extra or {}), **trial.overrides, **pinned, NAME_KEY: trial.name}


Trainer = Callable[..., Any]  # train(cfg, *, report, resume, run_dir, log), as more.train.train


def run_trial(config: dict[str, Any], trainer: Trainer | None = None) -> None:
    """The Tune function trainable: flat dict -> config -> ``train(cfg, report=...)``; resumes from Tune's checkpoint.

    The trainer writes its run folder (config.yaml, metrics.jsonl, evals, checkpoints) next to Tune's files in
    the trial folder when the storage is a local or shared path, else in the trial's working directory (synced).
    With several workers (``resources.workers``) every worker trains in that same folder and rank 0 writes it.
    ``trainer`` replaces :func:`more.train.train` (a benchmark times the harness around a light one); everything
    else (identity, tracking, checkpoints, retries) stays as for the real trainer.
    """

    params = dict(config[PARAM_KEY])
    source, name = params.pop(SOURCE_KEY), params.pop(NAME_KEY)
    condition = params.pop(CONDITION_KEY, "")
    tracking = params.pop(TRACKING_KEY, None) or {}
    workers = params.pop(WORKERS_KEY, None)
    identity = params.pop(IDENTITY_KEY, None) or {}
    earlier = params.pop(CONTINUE_KEY, None) or {}
    shared = bool(params.get(RUN_DIR_KEY))  # the run folder lies in the experiment storage (local or shared path)
    run_dir = Path(params.pop(RUN_DIR_KEY) or os.path.join(os.getcwd(), "run"))
    cfg = load_config(source, params)
    refuse_full_disk_retry(run_dir)  # i18: a retry on a disk that is still full fails at once with the same line
    write_identity(run_dir, identity, name=name, tracking=tracking)
    tracker = open_trial_tracker(tracking, cfg, name=name, condition=condition, run_dir=run_dir, identity=identity)

    # On a local or shared storage the run folder already holds every checkpoint a retry or --resume continues from
    # (newest_valid_checkpoint below): a Tune copy of each would cost a copy and a forced experiment-state snapshot
    # per evaluation. Only a run folder off the storage (an object store) hands its checkpoints to Tune.

    def tune_report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        inject_fault(run_dir, int(metrics.get("iter", 0)))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir and not shared else None
        tune.report(dict(metrics), checkpoint=checkpoint)  # copies the folder to storage before returning

    def print_line(text: str) -> None:
        print(f"[{name}] {text}", flush=True)

    report, log = tracker.report_callback(tune_report), tracker.log_callback(print_line)

    checkpoint = tune.get_checkpoint()
    own = newest_valid_checkpoint(run_dir)
    if own is None and checkpoint is None and earlier.get("checkpoint"):
        own = seed_from_earlier(run_dir, earlier)
    start = str(own) if own else checkpoint.path if checkpoint else "scratch"
    # FINISHED, or FAILED with the error as a tag; a retry continues the same MLflow run. The guard (i18) turns a
    # full disk into the one "disk full: ..." error and records it for the retry check above.
    with tracker, disk_full_guard(run_dir):
        if cfg.train.deterministic:
            _refuse_repeated_divergence(run_dir, start)
        def fit(resume_dir: str | None) -> None:
            if workers:
                from more.harness.ddp import run_ddp_trial

                run_ddp_trial(cfg, Resources(**workers), run_dir=run_dir, resume=resume_dir, report=report, log=log)
            else:
                if trainer is None:
                    from more.train import train as real_trainer
                fit_with = trainer or real_trainer
                fit_with(cfg, report=report, resume=resume_dir, run_dir=run_dir, log=log)

        try:
            if own is not None:
                # the trial's own newest checkpoint: it may be newer than the one Tune recorded (a process killed
                # between writing a checkpoint and reporting it), and checkpoints are written atomically
                log(f"resuming from {own}")
                known = checkpoint_iteration(checkpoint.path) if checkpoint else 0
                replay = evaluation_at(run_dir, own)
                if replay is not None and (known is None or known < int(replay["iter"])):
                    # Tune's checkpoint is older: it never received this evaluation (the last one, when nothing is
                    # left to train); the tracker skips it if its run already holds the step
                    report(replay, str(own))
                fit(str(own))
            elif checkpoint is None:
                fit(None)
            else:
                with checkpoint.as_directory() as resume_dir:
                    log(f"resuming from {checkpoint.path}")
                    fit(resume_dir)
        except Exception as exc:
            if _diverged(exc):
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / DIVERGED_FILE).write_text(json.dumps({"start": start, "error": str(exc)}))
            raise


def open_trial_tracker(tracking: dict[str, Any], cfg: Any, *, name: str, condition: str, run_dir: Path,
                       identity: dict[str, Any] | None = None) -> Any:
    """The trial's MLflow child run (a disabled tracker when the launch is not tracked)."""
    from more.tracking import TrialTracker, trial_key, trial_tags

    if not tracking.get("parent"):
        return TrialTracker()
    # "auto" trains on CUDA exactly when the trial holds a GPU (Ray hides the others): no torch import needed here
    device = cfg.runtime.device if cfg.runtime.device != "auto" else ("cuda" if ray.get_gpu_ids() else "cpu")
    tags = trial_tags(
        spec_name=tracking["spec_name"], spec_hash=tracking["spec_hash"], trial_name=name, condition=condition,
        seed=int(tracking.get("seed", cfg.train.seed)), sweep=tracking.get("sweep"),
        overrides=tracking.get("overrides", {}), git_commit=_git_commit(), fidelity=cfg.fidelity, device=device,
        ray_trial_id=tune.get_context().get_trial_id() or "",
    )
    if identity:
        tags.update({"more.content_key": identity["key"], "more.config_key": identity["config_key"],
                     "more.code_id": identity["code"], "more.run_dir": str(run_dir),
                     "more.experiment_folder": run_dir.parent.parent.name})
    return TrialTracker.open(tracking["uri"], tracking["parent"], trial_key(tracking["spec_hash"], name), tags, cfg,
                             run_name=name, run_dir=run_dir, log_checkpoint=bool(tracking.get("log_checkpoint")))


@functools.cache
def _git_commit() -> str:
    """The commit of the code this worker process runs: asked once per process (a reused actor runs many trials)."""
    from more.provenance import git_sha

    return git_sha()


def _diverged(exc: BaseException) -> bool:
    """A :class:`~more.train.TrainingDiverged`, looked up without importing the trainer (a light trainer never
    loads it, and then cannot have raised it)."""
    trainer = sys.modules.get("more.train.trainer")
    return trainer is not None and isinstance(exc, trainer.TrainingDiverged)


def _refuse_repeated_divergence(run_dir: Path, start: str) -> None:
    """A deterministic run that diverged from this same starting point will diverge again: fail at once instead of
    spending a retry on it (retries are for lost nodes and other transient failures)."""
    from more.train import TrainingDiverged

    marker = run_dir / DIVERGED_FILE
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("start") == start:
            raise TrainingDiverged(f"{previous['error']} [not retried: an earlier attempt diverged from the same "
                                   f"starting point ({start}) and training is deterministic]")


# ------------------------------------------------------------------------------------------------- stopping


class ThresholdStopper(tune.Stopper):
    """Stop a trial once ``iter`` reaches N or a metric reaches its threshold (>= for higher-is-better metrics,
    <= for losses, confusion and time, or for the spec's metric in mode min)."""

    def __init__(self, thresholds: dict[str, float], lower_is_better: set[str]) -> None:
        self.thresholds = dict(thresholds)
        self.lower_is_better = set(lower_is_better)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        for key, threshold in self.thresholds.items():
            value = result.get(key)
            if value is None:
                continue
            if (value <= threshold) if key in self.lower_is_better else (value >= threshold):
                return True
        return False

    def stop_all(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------------------- Tuner


def trial_dirname(trial: Any) -> str:
    return trial.config[PARAM_KEY][NAME_KEY]


def _trainable(spec: AblationSpec, trainer: Trainer | None = None) -> Any:
    fn = run_trial if trainer is None else tune.with_parameters(run_trial, trainer=trainer)
    return tune.with_resources(fn, spec.resources.as_ray())


class TunerSetup(NamedTuple):
    """What a new Tuner is built from (kept apart so it can be checked without Ray)."""

    param_space: dict[str, Any]
    tune_config: tune.TuneConfig
    run_config: tune.RunConfig


def asha_max_t(spec: AblationSpec, trials: list[Trial]) -> int:
    """ASHA's horizon in iterations: the spec's ``max_t``, else the longest trial's ``train.max_iters``."""
    assert spec.scheduler is not None
    return spec.scheduler.get("max_t") or max(trial_config(spec, t).train.max_iters for t in trials)


def tuner_setup(spec: AblationSpec, trials: list[Trial], store: ExperimentStore, *,
                max_concurrent: int | None = None, callbacks: list[Any] | None = None,
                tracking: dict[str, Any] | None = None,
                extras: dict[str, dict[str, Any]] | None = None) -> TunerSetup:
    """One grid point per trial, named by trial, writing to ``store.path``.

    Args:
        max_concurrent: overrides the spec's ``max_concurrent``.
        callbacks: Tune callbacks run in the driver.
        tracking: ``{uri, parent, spec_name, spec_hash}`` of the launch's MLflow parent run (None: untracked).
        extras: per trial name, the identity / continuation entries of its params (see :func:`trial_params`).
    """
    scheduler = None
    if spec.scheduler:
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr=spec.scheduler["time_attr"], max_t=asha_max_t(spec, trials),
            grace_period=spec.scheduler.get("grace_period", 1),
            reduction_factor=spec.scheduler.get("reduction_factor", 4),
        )
    lower = set(LOWER_IS_BETTER) | ({spec.metric} if spec.mode == "min" else set())
    stopper = ThresholdStopper(spec.stop, lower) if spec.stop else None
    return TunerSetup(
        param_space={PARAM_KEY: tune.grid_search([trial_params(spec, t, store, tracking, (extras or {}).get(t.name))
                                                for t in trials])},
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, scheduler=scheduler,
            max_concurrent_trials=max_concurrent or spec.max_concurrent,
            trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname,
            reuse_actors=True,  # one worker process per slot: torch and the model code are imported once, not per trial
        ),
        run_config=tune.RunConfig(
            name=store.name, storage_path=store.storage, stop=stopper, callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            sync_config=tune.SyncConfig(sync_artifacts=not store.is_local),
            verbose=1,
        ),
    )


def build_tuner(spec: AblationSpec, trials: list[Trial], store: ExperimentStore, *,
                max_concurrent: int | None = None, callbacks: list[Any] | None = None,
                tracking: dict[str, Any] | None = None, extras: dict[str, dict[str, Any]] | None = None,
                trainer: Trainer | None = None) -> tune.Tuner:
    """A new Tuner for the trials (see :func:`tuner_setup`); ``trainer`` replaces the real one (:func:`run_trial`)."""
    setup = tuner_setup(spec, trials, store, max_concurrent=max_concurrent, callbacks=callbacks, tracking=tracking,
                        extras=extras)
    return tune.Tuner(_trainable(spec, trainer), param_space=setup.param_space, tune_config=setup.tune_config,
                      run_config=setup.run_config)


def restore_tuner(spec: AblationSpec, store: ExperimentStore, *, trainer: Trainer | None = None) -> tune.Tuner:
    """The Tuner of an interrupted experiment: unfinished and errored trials continue from their last checkpoint,
    finished ones are kept as they are."""
    return tune.Tuner.restore(store.path, _trainable(spec, trainer), resume_unfinished=True, resume_errored=True)


def can_restore(store: ExperimentStore) -> bool:
    return tune.Tuner.can_restore(store.path)
