"""MLflow runs of an ablation: one parent (launch) run per spec hash, one child run per trial.

Wiring (a few lines in the driver and in the Tune trainable)::

    launch = LaunchTracker.start(uri, spec.name, digest, spec_text, git_commit)        # driver; reuses the parent
    trial = TrialTracker.open(uri, parent_run_id, trial_key(digest, name), tags, cfg, run_dir=run_dir)
    with trial:                                                                          # FAILED + more.error on error
        train(cfg, report=trial.report_callback(report), log=trial.log_callback(log), run_dir=run_dir)

A retried or resumed trial finds its child run by the tag ``more.trial_key`` and continues it: no duplicate runs.
Metrics go out in one ``log_batch`` per evaluation (the report's metrics plus the ``metrics.jsonl`` training records
written since the previous evaluation). Tracking never stops training: unless ``strict``, the first failure to reach
MLflow is warned about once and tracking is off for the rest of that trial (the run folder stays the source of truth).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from more.tracking.store import get_or_create_experiment, make_client, resolve_tracking_uri, runs_page_text
from more.tracking.views import save_trials_view

Report = Callable[[dict[str, float], "str | None"], None]
LAUNCH, TRIAL = "launch", "trial"
PARENT_TAG = "mlflow.parentRunId"
LOGGED_THROUGH = "more.logged_through"  # the last iteration whose metrics.jsonl records were logged
REUSED_BY_TAG = "more.reused_by."  # + <spec hash>, on a trial run a later launch reused (harness.growth)
PARAMS_PER_CALL, TAGS_PER_CALL, METRICS_PER_CALL = 100, 100, 1000
ERROR_CHARS = 5000
PICTURE_BUDGET = 0.03  # pictures are skipped while tracking would take more than this share of the trial's time
STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED", "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED"}


def trial_key(spec_hash: str, trial_name: str) -> str:
    """The identity of a trial across retries and resumes: ``<spec hash>:<trial name>``."""
    return f"{spec_hash}:{trial_name}"


def trial_tags(*, spec_name: str, spec_hash: str, trial_name: str, condition: str, seed: int,
               sweep: dict[str, Any] | None, overrides: dict[str, Any], git_commit: str, fidelity: str,
               device: str, ray_trial_id: str = "", checkpoint: str = "last") -> dict[str, str]:
    """The tags of a child run (``mlflow.parentRunId`` is added by :meth:`TrialTracker.open`)."""
    return {
        "more.kind": TRIAL, "more.trial_key": trial_key(spec_hash, trial_name), "more.condition": condition,
        "more.seed": str(seed), "more.spec_name": spec_name, "more.spec_hash": spec_hash,
        "more.sweep": json.dumps(sweep or {}, sort_keys=True, default=str),
        "more.overrides": json.dumps(overrides, sort_keys=True, default=str), "more.git_commit": git_commit,
        "more.fidelity": fidelity, "more.device": device, "more.ray_trial_id": ray_trial_id,
        "more.checkpoint": checkpoint,
    }


def flat_params(cfg: Any) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values stringified (lists as ``[1.0, 0.5]``)."""
    from more.config import to_flat

    return {key: str(value) for key, value in to_flat(cfg).items()}


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"tag value {value!r} cannot be searched: it contains a quote or backslash")
    return f"'{value}'"


def _search(client: Any, experiment_id: str, where: str) -> list[Any]:
    return list(client.search_runs([experiment_id], filter_string=where, max_results=1000,
                                   order_by=["attributes.start_time ASC"]))


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _warn(text: str) -> None:
    warnings.warn(text, RuntimeWarning, stacklevel=3)
    print(f"[more.tracking] {text}", file=sys.stderr, flush=True)


def error_text(error: BaseException | str | None) -> str:
    """``Type: message`` then the traceback, cut to the schema's 5000 characters."""
    if error is None:
        return ""
    if isinstance(error, BaseException):
        head = f"{type(error).__name__}: {error}"
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        text = head + ("\n\n" + tb if error.__traceback__ else "")
    else:
        text = str(error)
    return text[:ERROR_CHARS]


# ------------------------------------------------------------------------------------------------ launch


class LaunchTracker:
    """The parent run of one launch identity (spec hash); a resumed or repeated launch reuses it.

    Attributes:
        run_id: the parent run's id (None when tracking is off), to hand to every trial.
        resumed: True when an existing parent run was found and continued.
    """

    def __init__(self, client: Any, tracking_uri: str, experiment_id: str | None, run_id: str | None, *,
                 resumed: bool = False, strict: bool = False) -> None:
        self.client, self.tracking_uri = client, tracking_uri
        self.experiment_id, self.run_id, self.resumed, self.strict = experiment_id, run_id, resumed, strict

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @classmethod
    def start(cls, tracking_uri: str | None, spec_name: str, spec_hash: str, spec_yaml_text: str, git_commit: str,
              *, experiment_name: str | None = None, strict: bool = False) -> LaunchTracker:
        """Find or create the experiment (named ``experiment_name`` or the spec's name) and its parent run.

        Never raises unless ``strict``: an unreachable store gives a disabled tracker (``run_id`` None).
        """
        uri = resolve_tracking_uri(tracking_uri)
        try:
            client = make_client(uri)
            exp_id = get_or_create_experiment(client, experiment_name or spec_name, uri=uri,
                                              tags={"more.spec_name": spec_name})
            tags = {"more.kind": LAUNCH, "more.spec_name": spec_name, "more.spec_hash": spec_hash,
                    "more.git_commit": git_commit}
            found = _search(client, exp_id, f"tags.`more.kind` = '{LAUNCH}' and "
                                            f"tags.`more.spec_hash` = {_quoted(spec_hash)}")
            if found:
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                client.set_tag(run_id, "more.git_commit", git_commit)
            else:
                run_id = client.create_run(exp_id, run_name=f"{spec_name}-{spec_hash}", tags=tags).info.run_id
            client.log_text(run_id, spec_yaml_text, "spec.yaml")
        except Exception as exc:  # noqa: BLE001 -- tracking must not stop a launch
            if strict:
                raise
            _warn(f"MLflow at {uri} unavailable, launch not tracked: {type(exc).__name__}: {exc}")
            return cls(None, uri, None, None)
        return cls(client, uri, exp_id, run_id, resumed=bool(found), strict=strict)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if self.strict:
                raise
            _warn(f"MLflow: {what} failed: {type(exc).__name__}: {exc}")
            return None

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(f"logging {artifact_file}", self.client.log_text, self.run_id, text, artifact_file)

    def log_results(self, *, markdown: str, csv: str, json_text: str | None = None) -> None:
        """The results table as ``results.md`` / ``results.csv`` (and ``results.json``) on the parent run."""
        self.log_text(markdown, "results.md")
        self.log_text(csv, "results.csv")
        if json_text is not None:
            self.log_text(json_text, "results.json")

    def log_dir(self, local_dir: str | os.PathLike, artifact_path: str = "report") -> None:
        """A folder of files (e.g. the report) under ``artifact_path`` of the parent run."""
        self._call(f"logging {local_dir}", self.client.log_artifacts, self.run_id, str(local_dir), artifact_path)

    def trial_runs(self) -> list[Any]:
        """The child runs of this launch, oldest first."""
        if not self.enabled:
            return []
        return _search(self.client, self.experiment_id, f"tags.`{PARENT_TAG}` = {_quoted(self.run_id)}")

    def listed_trial_runs(self) -> list[Any]:
        """:meth:`trial_runs`, with a tracking failure reported as a warning (an empty list then)."""
        return self._call("listing the trial runs", self.trial_runs) or []

    def close_orphans(self, outcomes: dict[str, tuple[str, str]], runs: list[Any] | None = None) -> list[str]:
        """End the child runs that Tune finished but whose trial process did not live to end them.

        Tune stops a trial (stop rule, scheduler, end of the experiment) by tearing its process down while the
        trial ends its run, and a lost node takes the process with it: such a run can stay RUNNING. The driver
        knows every trial's outcome, so it ends those runs here.

        Args:
            outcomes: ``{trial key: (Tune status, error summary)}`` of the launch's trials; only TERMINATED and
                ERROR trials are closed (FINISHED, or FAILED with ``more.error``), others are left as they are.
            runs: the launch's trial runs when the caller has just listed them (else they are listed here).

        Returns:
            The keys of the runs it ended (each tagged ``more.closed_by=driver``).
        """
        closed = []
        for run in self.listed_trial_runs() if runs is None else runs:
            key = run.data.tags.get("more.trial_key", "")
            status, error = outcomes.get(key, ("", ""))
            if run.info.status != "RUNNING" or status not in ("TERMINATED", "ERROR"):
                continue
            if status == "ERROR" and error:
                self._call("tagging an orphan run", self.client.set_tag, run.info.run_id, "more.error", error[:5000])
            self._call("tagging an orphan run", self.client.set_tag, run.info.run_id, "more.closed_by", "driver")
            self._call("ending an orphan run", self.client.set_terminated, run.info.run_id, STATUS[status])
            closed.append(key)
        return closed

    def finish(self, status: str = "FINISHED") -> None:
        self._call("ending the launch run", self.client.set_terminated, self.run_id, STATUS.get(status, status))

    def runs_page(self) -> str:
        """The line that says where the experiment's runs table is in the MLflow UI ("" when tracking is off), in
        the saved view that lists the trials with the spec's metric (more/tracking/views.py) when it can be saved."""
        if not self.enabled:
            return ""
        view = self._call("saving the runs page's trials view", save_trials_view, self.client, self.experiment_id,
                          self.run_id)
        return runs_page_text(self.tracking_uri, self.experiment_id, view)


# ------------------------------------------------------------------------------------------------- trial


class TrialTracker:
    """The child run of one trial, continued on retry/resume; see the module docstring for the wiring.

    Attributes:
        run_id: the child run's id (None when tracking is off).
        resumed: True when an existing child run with the same ``more.trial_key`` was continued.
        overhead_s: seconds spent in tracking so far (open, reports, finish).
    """

    def __init__(self, client: Any = None, run_id: str | None = None, *, cfg: Any = None,
                 run_dir: str | os.PathLike | None = None, pictures: bool = True, log_checkpoint: bool = False,
                 strict: bool = False, resumed: bool = False, logged_through: int = 0,
                 budget: float | None = PICTURE_BUDGET) -> None:
        self.client, self.run_id, self.cfg, self.strict, self.resumed = client, run_id, cfg, strict, resumed
        self.run_dir = Path(run_dir) if run_dir else None
        self.log_checkpoint = log_checkpoint
        self.logged_through = logged_through
        self.overhead_s = 0.0
        self.budget = budget
        self.pictures_skipped = 0
        self._opened_at = time.perf_counter()
        self._picture_s: float | None = None  # the last picture's cost
        self.finished = False
        self.last_checkpoint: str | None = None
        self._staging = Path(tempfile.mkdtemp(prefix="more-tracking-")) if run_id else None
        self._log_file = (self.run_dir or self._staging or Path(".")) / "train.log"
        self._class_names: list[str] | None = None
        self._pictures: Any = None
        if cfg is not None and pictures and run_id:
            from more.tracking.pictures import PictureMaker

            maker = PictureMaker(cfg)
            self._pictures = maker if maker.enabled else None

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    # -------------------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, tracking_uri: str | None, parent_run_id: str | None, trial_key: str, tags: dict[str, str],
             cfg: Any = None, *, run_name: str | None = None, run_dir: str | os.PathLike | None = None,
             pictures: bool = True, log_checkpoint: bool = False, strict: bool = False,
             budget: float | None = PICTURE_BUDGET) -> TrialTracker:
        """Continue the child run tagged ``more.trial_key = trial_key`` under the parent's experiment, or create it.

        Args:
            tracking_uri: the store (the driver passes its resolved URI; None = env or embedded default).
            parent_run_id: :attr:`LaunchTracker.run_id`; None gives a disabled tracker.
            trial_key: :func:`trial_key` of the trial.
            tags: :func:`trial_tags` (``more.trial_key`` and ``mlflow.parentRunId`` are set here in any case).
            cfg: the resolved config: params, ``config.yaml``, class names and the picture grid (None: none).
            run_name: the run's name (default: the trial name, the part of the key after ``:``).
            run_dir: the trainer's run folder: ``metrics.jsonl`` records are mirrored, ``train.log`` lives there.
            pictures: draw ``pictures/iter_N.png`` at each evaluation (needs ``cfg`` and ``eval.num_vis`` > 0).
            budget: skip an evaluation's picture when drawing it would bring the time spent in tracking above this
                share of the time since opening (dense evaluations in short trials); the final evaluation
                (``iter == train.max_iters``) always gets its picture. None: always draw.
            log_checkpoint: upload the last checkpoint folder when the trial finishes.
            strict: raise on tracking errors instead of warning once and going on untracked.
        """
        if parent_run_id is None:
            return cls()
        t0 = time.perf_counter()
        uri = resolve_tracking_uri(tracking_uri)
        try:
            client = make_client(uri)
            experiment_id = client.get_run(parent_run_id).info.experiment_id
            tags = {**tags, "more.trial_key": trial_key, PARENT_TAG: parent_run_id}
            found = _search(client, experiment_id, f"tags.`more.trial_key` = {_quoted(trial_key)}")
            if found:
                run = found[0]
                run_id = run.info.run_id
                attempts = int(run.data.tags.get("more.attempts", "1")) + 1
                client.update_run(run_id, status="RUNNING")
                if "more.error" in run.data.tags:
                    client.delete_tag(run_id, "more.error")
                logged = int(run.data.tags.get(LOGGED_THROUGH, "0"))
                known = dict(run.data.params)
            else:
                name = run_name or trial_key.split(":", 1)[-1]
                run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
                attempts, logged, known = 1, 0, {}
            tracker = cls(client, run_id, cfg=cfg, run_dir=run_dir, pictures=pictures, log_checkpoint=log_checkpoint,
                          strict=strict, resumed=bool(found), logged_through=logged, budget=budget)
            tracker._start(tags={**tags, "more.attempts": str(attempts)}, known_params=known)
        except Exception as exc:  # noqa: BLE001 -- tracking must not stop a trial
            if strict:
                raise
            _warn(f"MLflow at {uri} unavailable, trial {trial_key} not tracked: {type(exc).__name__}: {exc}")
            return cls()
        tracker.overhead_s += time.perf_counter() - t0
        return tracker

    def _start(self, *, tags: dict[str, str], known_params: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        params = flat_params(self.cfg) if self.cfg is not None else {}
        changed = sorted(k for k, v in params.items() if k in known_params and known_params[k] != v)
        if changed:
            _warn(f"run {self.run_id}: the config differs from the tracked params for {', '.join(changed)}; "
                  f"the first values are kept")
        new = _chunks([Param(k, v) for k, v in params.items() if k not in known_params], PARAMS_PER_CALL)
        tag_parts = _chunks([RunTag(k, v) for k, v in tags.items()], TAGS_PER_CALL)
        for i in range(max(len(new), len(tag_parts))):  # few calls: each carries up to 100 params and 100 tags
            self.client.log_batch(self.run_id, params=new[i] if i < len(new) else (),
                                  tags=tag_parts[i] if i < len(tag_parts) else ())
        if self.cfg is not None:
            from more.config import dump_yaml

            self.client.log_text(self.run_id, dump_yaml(self.cfg), "config.yaml")

    # ----------------------------------------------------------------------------------------- callbacks

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one tracking step, timing it; without ``strict`` the first failure turns tracking off."""
        if not self.enabled:
            return None
        t0 = time.perf_counter()
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            if self.strict:
                raise
            _warn(f"MLflow tracking is off for the rest of run {self.run_id}: {what} failed: "
                  f"{type(exc).__name__}: {exc}")
            self.run_id = None
            return None
        finally:
            self.overhead_s += time.perf_counter() - t0

    def report_callback(self, inner: Report | None = None) -> Report:
        """``report(metrics, checkpoint_dir)`` for :func:`more.train.train`: tracks the evaluation, then calls
        ``inner`` (e.g. the Tune report), whose errors propagate."""

        def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
            self._guard(f"logging iteration {metrics.get('iter')}", self._record, metrics, checkpoint_dir)
            if inner is not None:
                try:
                    inner(metrics, checkpoint_dir)
                except SystemExit as exc:
                    # Tune stops a trial (stopper, scheduler) by raising SystemExit(0) here while it tears the
                    # trial's process down: end the run at once, before anything else runs in this thread.
                    if exc.code in (0, None):
                        self.finish("FINISHED")
                    raise

        return report

    def log_callback(self, inner: Callable[[str], None] | None = None) -> Callable[[str], None]:
        """``log(text)`` for :func:`more.train.train`: appends to ``train.log`` (uploaded at each evaluation and at
        the end), then calls ``inner``."""

        def log(text: str) -> None:
            if self.enabled:
                self._log_file.parent.mkdir(parents=True, exist_ok=True)
                with self._log_file.open("a") as fh:
                    fh.write(text.rstrip("\n") + "\n")
            if inner is not None:
                inner(text)

        return log

    # ----------------------------------------------------------------------------------------- recording

    def _jsonl_records(self, through: int) -> list[dict[str, Any]]:
        """Records of ``run_dir/metrics.jsonl`` with ``logged_through < iter <= through``."""
        if self.run_dir is None or not (self.run_dir / "metrics.jsonl").is_file():
            return []
        out = []
        for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if self.logged_through < int(rec.get("iter", 0)) <= through:
                    out.append(rec)
        return out

    def metric_batch(self, metrics: dict[str, float], step: int) -> list[Any]:
        """The metrics of one evaluation: the jsonl records since the last one, then ``metrics`` (which win on the
        same key and step; the trainer's own include ``sys/peak_gpu_mem_gb`` on CUDA) and the tracking time so far."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values: dict[tuple[str, int], float] = {}
        for rec in self._jsonl_records(step):
            for key, value in rec.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values[(key, int(rec["iter"]))] = float(value)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[(key, step)] = float(value)
        values[("time/tracking_sec", step)] = self.overhead_s
        return [Metric(key, v, now, s) for (key, s), v in values.items()]

    def _record(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        from mlflow.entities import RunTag

        step = int(metrics.get("iter", self.logged_through))
        if checkpoint_dir:  # even for a step already logged: finish() uploads the newest checkpoint
            self.last_checkpoint = checkpoint_dir
        if step <= self.logged_through:
            # the run already holds this step (a retry that restarted from an older checkpoint than the one it had
            # reached): exact resume recomputes the same values, so logging them again would only duplicate them
            return
        batch = self.metric_batch(metrics, step)
        tag = [RunTag(LOGGED_THROUGH, str(step))]
        for i, part in enumerate(_chunks(batch, METRICS_PER_CALL - 1)):
            self.client.log_batch(self.run_id, metrics=part, tags=tag if i == 0 else ())
        self.logged_through = step
        self._upload_eval_files(metrics, step, checkpoint_dir)

    def _upload_eval_files(self, metrics: dict[str, float], step: int, checkpoint_dir: str | None) -> None:
        from more.tracking.tables import per_class_table, to_csv, to_markdown

        folder = self._staging / f"iter_{step:06d}"
        try:
            if self.cfg is not None:
                table = per_class_table(metrics, self.class_names())
                if table.columns:
                    (folder / "per_class").mkdir(parents=True, exist_ok=True)
                    (folder / "per_class" / f"iter_{step:06d}.csv").write_text(to_csv(table))
                    (folder / "per_class" / f"iter_{step:06d}.md").write_text(
                        to_markdown(table, title=f"per-class scores at iteration {step}"))
            if self._pictures is not None and checkpoint_dir and self._picture_due(step):
                png = self._picture(checkpoint_dir)
                if png:
                    (folder / "pictures").mkdir(parents=True, exist_ok=True)
                    (folder / "pictures" / f"iter_{step:06d}.png").write_bytes(png)
            if self._log_file.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._log_file, folder / "train.log")
            if folder.is_dir():
                self.client.log_artifacts(self.run_id, str(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _picture_due(self, step: int) -> bool:
        final = self.cfg is not None and step >= self.cfg.train.max_iters
        if final or self.budget is None or self._picture_s is None:
            return True
        if self.overhead_s + self._picture_s <= self.budget * (time.perf_counter() - self._opened_at):
            return True
        self.pictures_skipped += 1
        return False

    def _picture(self, checkpoint_dir: str) -> bytes | None:
        """The grid PNG; a failure here (e.g. out of memory) turns only the pictures off."""
        t0 = time.perf_counter()
        try:
            png = self._pictures.png(checkpoint_dir)
            self._picture_s = time.perf_counter() - t0
            return png
        except Exception as exc:  # noqa: BLE001
            if self.strict:
                raise
            _warn(f"run {self.run_id}: picture grid off: {type(exc).__name__}: {exc}")
            self._pictures = None
            return None

    def class_names(self) -> list[str]:
        if self._class_names is None:
            from more.data.classes import class_names

            self._class_names = class_names(self.cfg)
        return self._class_names

    # ------------------------------------------------------------------------------------------- ending

    def finish(self, status: str = "FINISHED", error: BaseException | str | None = None) -> None:
        """End the run: ``more.error`` (first 5000 characters) when given, the final ``train.log`` and, when asked,
        the last checkpoint; then the status (FINISHED, FAILED or KILLED; Tune's TERMINATED/ERROR are mapped)."""
        if self.finished:
            return
        self.finished = True
        self._guard("ending the run", self._finish, STATUS.get(status, status), error_text(error))
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _finish(self, status: str, error: str) -> None:
        # The tags and the status first: they are quick, and a trial's process may be torn down while the
        # artifacts below are still uploading (artifacts can be added to an ended run).
        if error:
            self.client.set_tag(self.run_id, "more.error", error)
        if self.pictures_skipped:
            self.client.set_tag(self.run_id, "more.pictures_skipped", str(self.pictures_skipped))
        self.client.set_terminated(self.run_id, status=status)
        if self._log_file.is_file():
            self.client.log_artifact(self.run_id, str(self._log_file))
        if self.log_checkpoint and status == "FINISHED" and self.last_checkpoint:
            ckpt = Path(self.last_checkpoint)
            if ckpt.is_dir():
                self.client.log_artifacts(self.run_id, str(ckpt), f"checkpoint/{ckpt.name}")

    def __enter__(self) -> TrialTracker:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish("FINISHED")  # Tune ends a trial stopped early (scheduler, stopper) with SystemExit(0)
        else:
            self.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", error=exc)
        return False


def log_remote_probe(tracking_uri: str, parent_run_id: str, name: str, *, value: float, step: int = 1) -> str:
    """Open a trial run named ``name`` under ``parent_run_id`` given only the tracking URI, log ``probe/value`` at
    ``step`` and a text artifact, finish it and return its run id (a remote worker's connectivity check)."""
    tracker = TrialTracker.open(tracking_uri, parent_run_id, trial_key("probe", name),
                                {"more.kind": TRIAL, "more.host": os.uname().nodename}, strict=True)
    with tracker:
        tracker.report_callback()({"iter": float(step), "probe/value": float(value)}, None)
        tracker.client.log_text(tracker.run_id, f"hello from pid {os.getpid()}\n", "probe.txt")
    return str(tracker.run_id)
