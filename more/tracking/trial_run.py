"""The child MLflow run of one trial, kept complete by the trial's run folder.

Wiring (a few lines in the Tune trainable)::

    trial = TrialTracker.open(uri, parent_run_id, trial_key(digest, name), tags, cfg, run_dir=run_dir)
    with trial:                                                                          # FAILED + more.error on error
        train(cfg, report=trial.report_callback(report), log=trial.log_callback(log), run_dir=run_dir)

A retried or resumed trial finds its child run by the tag ``more.trial_key`` and continues it: no duplicate runs.

The training loop never waits for MLflow. An evaluation is written to the run folder's outbox
(:mod:`more.tracking.outbox`) and a background sender (:mod:`more.tracking.sender`) brings the run up to it: one
``log_batch`` per evaluation with the ``metrics.jsonl`` records written since the previous one, the per-class tables,
the picture grid and ``train.log``. When the store is unreachable the sender keeps retrying with backoff and, once it
answers, sends every evaluation it missed; the trial trains on meanwhile. When the trial ends, :meth:`finish` waits
for the sender while it makes progress; what a store down at that moment did not get, the driver's reconciliation
(:func:`more.tracking.reconcile.reconcile`) or the trial's next attempt sends from the run folder. ``strict`` trackers
(tests, probes) send in the caller's thread instead and raise on failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from more.tracking.outbox import Ending, Evaluation, Opening, Outbox, OutboxState, pending_dir, read_outbox
from more.tracking.runs import PICTURE_BUDGET, STATUS, TRIAL, Report, error_text, flat_params, trial_key, warn
from more.tracking.sender import Answered, Sender
from more.tracking.store import make_client, resolve_tracking_uri
from more.tracking.sync import RunSync

FINISH_WAIT_ENV = "MORE_TRACKING_FINISH_WAIT_S"
OPEN_WAIT_S = 5.0  # how long opening waits for the run (it goes on in the background after that)
FINISH_WAIT_S = 30.0  # how long the end of a trial waits for a store that stopped answering (``$FINISH_WAIT_ENV``)
MEMORY_EVALUATIONS = 256  # unsent evaluations kept in memory; older ones are read back from the outbox file


class TrialTracker:
    """The child run of one trial, continued on retry/resume; see the module docstring for the wiring.

    Attributes:
        resumed: True when an existing child run with the same ``more.trial_key`` was continued.
        overhead_s: seconds the trial's own thread spent in tracking so far (open, reports, finish).
    """

    def __init__(self, uri: str | None = None, *, opening: Opening | None = None, cfg: Any = None,
                 run_dir: str | os.PathLike | None = None, pictures: bool = True, strict: bool = False,
                 budget: float | None = PICTURE_BUDGET, open_wait_s: float = OPEN_WAIT_S,
                 finish_wait_s: float | None = None) -> None:
        self.uri, self.opening, self.cfg, self.strict = uri, opening, cfg, strict
        self.run_dir = Path(run_dir) if run_dir else None
        self.overhead_s = 0.0
        self.budget = budget
        self.pictures_skipped = 0
        self.finished = False
        self.last_checkpoint: str | None = None
        self.finish_wait_s = finish_wait_s if finish_wait_s is not None else \
            float(os.environ.get(FINISH_WAIT_ENV) or FINISH_WAIT_S)
        self._opened_at = time.perf_counter()
        self._picture_s: float | None = None  # the last picture's cost
        self._class_names: list[str] | None = None
        self._pictures: Any = None
        self._staging: Path | None = None
        self.client: Any = None
        self._sync: RunSync | None = None
        self._sender: Sender | None = None
        self._lock = threading.Lock()
        self._state = OutboxState()
        self._spilled_through = 0  # the newest evaluation whose metrics were dropped from memory before being sent
        if opening is None:
            return
        if self.run_dir is None:  # no run folder: the outbox lives in a private folder for the tracker's lifetime
            self._staging = Path(tempfile.mkdtemp(prefix="more-tracking-"))
        self.folder = self.run_dir or self._staging
        self._outbox = Outbox(self.folder)
        self._state = read_outbox(self.folder)  # earlier attempts' evaluations: a step is logged once
        self._outbox.opened(opening)
        self._state.opening, self._state.ending = opening, None
        self._state.attempts += 1
        self._log_file = self.folder / "train.log"
        if cfg is not None and pictures:
            from more.tracking.pictures import PictureMaker

            maker = PictureMaker(cfg)
            self._pictures = maker if maker.enabled else None
        self._warned = False
        if strict:
            self.client = make_client(uri)
            self._sync = RunSync(self.client, self.folder, live=True)
            self._sync.sync(self._snapshot())
        else:
            self._sender = Sender(self._pass, name=f"more-tracking-{opening.trial_key}", on_failure=self._failed,
                                  on_recovery=self._recovered)
            self._sender.poke()
            self._sender.wait(give_up_on_failure=True, timeout_s=open_wait_s)

    @property
    def enabled(self) -> bool:
        """Whether the trial is tracked (the run may not be reachable yet: the sender keeps trying)."""
        return self.opening is not None

    @property
    def run_id(self) -> str | None:
        """The child run's id once the store has answered (None before, and when tracking is off)."""
        return self._sync.run.run_id if self._sync is not None else None

    @property
    def resumed(self) -> bool:
        return self._sync is not None and self._sync.run.opened and not self._sync.run.created

    @property
    def sender_s(self) -> float:
        """Seconds the background sender has spent syncing the run (not counted in :attr:`overhead_s`)."""
        return self._sender.busy_s if self._sender is not None else 0.0

    @property
    def logged_through(self) -> int:
        """The last evaluation the run holds (as far as this tracker knows)."""
        return self._sync.run.logged_through if self._sync is not None else 0

    # -------------------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, tracking_uri: str | None, parent_run_id: str | None, trial_key: str, tags: dict[str, str],
             cfg: Any = None, *, run_name: str | None = None, run_dir: str | os.PathLike | None = None,
             pictures: bool = True, log_checkpoint: bool = False, strict: bool = False,
             budget: float | None = PICTURE_BUDGET, open_wait_s: float = OPEN_WAIT_S,
             finish_wait_s: float | None = None) -> TrialTracker:
        """Continue the child run tagged ``more.trial_key = trial_key`` under the parent's experiment, or create it.

        Args:
            tracking_uri: the store (the driver passes its resolved URI; None = env or embedded default).
            parent_run_id: :attr:`LaunchTracker.run_id`; None gives a disabled tracker.
            trial_key: :func:`trial_key` of the trial.
            tags: :func:`trial_tags` (``more.trial_key`` and ``mlflow.parentRunId`` are set here in any case).
            cfg: the resolved config: params, ``config.yaml``, class names and the picture grid (None: none).
            run_name: the run's name (default: the trial name, the part of the key after ``:``).
            run_dir: the trainer's run folder: it holds the outbox, ``metrics.jsonl`` records are mirrored from it,
                ``train.log`` lives there (None: a private temporary folder, gone when the tracker finishes).
            pictures: draw ``pictures/iter_N.png`` at each evaluation (needs ``cfg`` and ``eval.num_vis`` > 0).
            budget: skip an evaluation's picture when drawing it would bring the time spent in tracking above this
                share of the time since opening (dense evaluations in short trials); the final evaluation
                (``iter == train.max_iters``) always gets its picture. None: always draw.
            log_checkpoint: upload the last checkpoint folder when the trial finishes.
            strict: send in the caller's thread and raise on tracking errors (tests, connectivity probes).
            open_wait_s: how long to wait for the run before training starts (the sender goes on after that).
            finish_wait_s: how long :meth:`finish` waits for a store that stopped answering (default:
                ``$MORE_TRACKING_FINISH_WAIT_S``, else 30 s).
        """
        if parent_run_id is None:
            return cls()
        t0 = time.perf_counter()
        uri = resolve_tracking_uri(tracking_uri)
        from more.database import redact

        opening = Opening(uri=redact(uri), parent=parent_run_id, trial_key=trial_key,  # the outbox file: no password
                          run_name=run_name or trial_key.split(":", 1)[-1],
                          tags={**tags, "more.trial_key": trial_key}, log_checkpoint=log_checkpoint)
        if cfg is not None:
            from more.config import dump_yaml

            opening.params, opening.config_yaml = flat_params(cfg), dump_yaml(cfg)
        tracker = cls(uri, opening=opening, cfg=cfg, run_dir=run_dir, pictures=pictures, strict=strict, budget=budget,
                      open_wait_s=open_wait_s, finish_wait_s=finish_wait_s)
        tracker.overhead_s += time.perf_counter() - t0
        return tracker

    # ----------------------------------------------------------------------------------------- sending

    def _snapshot(self) -> OutboxState:
        """What the run must hold: from memory, or from the outbox file while evaluations are spilled."""
        with self._lock:
            if self._spilled_through > self.logged_through:
                return read_outbox(self.folder)
            return OutboxState(self._state.opening, dict(self._state.evaluations), self._state.ending,
                               self._state.attempts)

    def _pass(self) -> None:
        """One sync pass in the sender's thread (the client is made there too: a new sqlite store migrates)."""
        if self._sync is None:
            self.client = Answered(make_client(self.uri))
            self._sync = RunSync(self.client, self.folder, live=True)
        self._sync.sync(self._snapshot())
        with self._lock:  # the run holds these: keep their steps only (the outbox file keeps the rest)
            done = self._sync.run.logged_through
            for step, evaluation in self._state.evaluations.items():
                if step <= done and evaluation.metrics:
                    self._state.evaluations[step] = _sent(evaluation)

    def _last_answer(self) -> float:
        return self.client.answered_at if isinstance(self.client, Answered) else 0.0

    def _failed(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            where = self.run_dir or "this process"
            warn(f"MLflow at {self.uri} unreachable for trial {self.opening.trial_key}: {type(exc).__name__}: "
                 f"{str(exc)[:300]}; training goes on, the run is caught up from {where} once it answers")

    def _recovered(self, down_s: float) -> None:
        warn(f"MLflow at {self.uri} answers again after {down_s:.0f} s: trial {self.opening.trial_key} caught up "
             f"(through iteration {self.logged_through})")
        self._warned = False

    def _send(self) -> None:
        """Hand new work to the sender (or, when strict, send it now)."""
        if self._sender is not None:
            self._sender.poke()
        elif self._sync is not None:
            self._sync.sync(self._snapshot())

    # ----------------------------------------------------------------------------------------- callbacks

    def report_callback(self, inner: Report | None = None) -> Report:
        """``report(metrics, checkpoint_dir)`` for :func:`more.train.train`: records the evaluation (the sender logs
        it), then calls ``inner`` (e.g. the Tune report), whose errors propagate."""

        def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
            if self.enabled:
                t0 = time.perf_counter()
                try:
                    self._record(metrics, checkpoint_dir)
                finally:
                    self.overhead_s += time.perf_counter() - t0
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

    def log_callback(self, inner: Any = None) -> Any:
        """``log(text)`` for :func:`more.train.train`: appends to ``train.log`` (uploaded with each evaluation and at
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

    def _record(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        step = int(metrics.get("iter", self.logged_through))
        if checkpoint_dir:  # even for a step already logged: finish() uploads the newest checkpoint
            self.last_checkpoint = checkpoint_dir
        with self._lock:
            known = step in self._state.evaluations
        if known or step <= self.logged_through:
            # the run already holds this step (a retry that restarted from an older checkpoint than the one it had
            # reached): exact resume recomputes the same values, so logging them again would only duplicate them
            return
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        evaluation = Evaluation(step=step, time_ms=int(time.time() * 1000), metrics=numeric,
                                checkpoint=checkpoint_dir, tracking_sec=self.overhead_s)
        try:
            self._stage_files(numeric, step, checkpoint_dir)
            self._outbox.evaluated(evaluation)
        except OSError as exc:  # a full or failing disk: the evaluation is still sent from memory
            if self.strict:
                raise
            warn(f"trial {self.opening.trial_key}: could not write its tracking outbox: {exc}")
        with self._lock:
            self._state.evaluations[step] = evaluation
            unsent = sorted(s for s, e in self._state.evaluations.items() if e.metrics and s > self.logged_through)
            if len(unsent) > MEMORY_EVALUATIONS:  # a long outage: the oldest are read back from the outbox file
                oldest = unsent[0]
                self._state.evaluations[oldest] = _sent(self._state.evaluations[oldest])
                self._spilled_through = max(self._spilled_through, oldest)
        self._send()

    def _stage_files(self, metrics: dict[str, float], step: int, checkpoint_dir: str | None) -> None:
        """The evaluation's per-class tables and picture grid, in the outbox's pending folder."""
        from more.tracking.tables import per_class_table, to_csv, to_markdown

        folder = pending_dir(self.folder, step)
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
        folder.mkdir(parents=True, exist_ok=True)

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
            warn(f"trial {self.opening.trial_key}: picture grid off: {type(exc).__name__}: {exc}")
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
        the last checkpoint; then the status (FINISHED, FAILED or KILLED; Tune's TERMINATED/ERROR are mapped).

        Waits for the sender while the store answers; a store that has not answered for ``finish_wait_s`` leaves the
        rest to the driver's reconciliation (the run folder has everything)."""
        if self.finished or not self.enabled:
            self.finished = True
            return
        self.finished = True
        t0 = time.perf_counter()
        status = STATUS.get(status, status)
        upload = self.last_checkpoint if self.opening.log_checkpoint and status == "FINISHED" else None
        ending = Ending(status=status, error=error_text(error), checkpoint=upload,
                        pictures_skipped=self.pictures_skipped)
        try:
            self._outbox.ended(ending)
        except OSError as exc:
            if self.strict:
                raise
            warn(f"trial {self.opening.trial_key}: could not write its tracking outbox: {exc}")
        with self._lock:
            self._state.ending = ending
        try:
            self._send()
            if self._sender is not None:
                caught_up = self._sender.wait(idle_s=self.finish_wait_s, last_answer=self._last_answer)
                self._sender.close()
                if not caught_up:
                    warn(f"MLflow at {self.uri} still unreachable: the run of trial {self.opening.trial_key} is left "
                         f"incomplete for now; the driver's reconciliation fills it in from "
                         f"{self.run_dir or 'nothing (no run folder)'}")
        finally:
            self.overhead_s += time.perf_counter() - t0
            if self._staging is not None:  # no run folder: nothing could reconcile from it later
                shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> TrialTracker:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish("FINISHED")  # Tune ends a trial stopped early (scheduler, stopper) with SystemExit(0)
        else:
            self.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", error=exc)
        return False


def _sent(evaluation: Evaluation) -> Evaluation:
    """The step of an evaluation without its metrics (it is logged, or spilled to the outbox file)."""
    return Evaluation(step=evaluation.step, time_ms=evaluation.time_ms, metrics={}, checkpoint=evaluation.checkpoint,
                      tracking_sec=evaluation.tracking_sec)


def log_remote_probe(tracking_uri: str, parent_run_id: str, name: str, *, value: float, step: int = 1) -> str:
    """Open a trial run named ``name`` under ``parent_run_id`` given only the tracking URI, log ``probe/value`` at
    ``step`` and a text artifact, finish it and return its run id (a remote worker's connectivity check)."""
    tracker = TrialTracker.open(tracking_uri, parent_run_id, trial_key("probe", name),
                                {"more.kind": TRIAL, "more.host": os.uname().nodename}, strict=True)
    with tracker:
        tracker.report_callback()({"iter": float(step), "probe/value": float(value)}, None)
        tracker.client.log_text(tracker.run_id, f"hello from pid {os.getpid()}\n", "probe.txt")
    return str(tracker.run_id)
