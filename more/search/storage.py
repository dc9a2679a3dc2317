"""Where an Optuna study is stored, and how trials of a lost worker are failed instead of staying RUNNING.

- A path is an Optuna journal file (the default, ``<out>/study.journal``): safe for one machine's parallel writers.
- An RDB URL (``postgresql://user@host:5432/db``, or ``sqlite:////abs/study.db``) is an
  ``optuna.storages.RDBStorage`` with heartbeats: every running trial records a heartbeat every ``heartbeat_s``
  (60 s); a trial whose heartbeat is older than ``grace_s`` (180 s) belongs to a worker that is gone (killed, lost
  node), and the next driver that asks the study for a trial fails it (:func:`fail_stale`) and queues it once more
  (:class:`StaleTrialCallback`). Several drivers can share one study on PostgreSQL that way.
- Optuna records heartbeats inside ``study.optimize`` (the cached search). The training search asks and tells through
  Ray Tune's ``OptunaSearch`` in its driver, so that driver beats for the trials it asked (:class:`DriverHeartbeat`).

The password of a URL is never shown (:func:`more.database.redact`); better, keep it out of the URL
(``PGPASSWORD`` or ``~/.pgpass``).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from more.database import redact

HEARTBEAT_ENV, GRACE_ENV = "MORE_OPTUNA_HEARTBEAT_S", "MORE_OPTUNA_GRACE_S"
HEARTBEAT_S = 60
RETRIES_OF_A_LOST_TRIAL = 1


def heartbeat_settings() -> tuple[int, int]:
    """``(heartbeat interval, grace period)`` in seconds: ``$MORE_OPTUNA_HEARTBEAT_S`` (60), ``$MORE_OPTUNA_GRACE_S``
    (three intervals: a slow database does not fail live trials)."""
    beat = int(os.environ.get(HEARTBEAT_ENV) or HEARTBEAT_S)
    return beat, int(os.environ.get(GRACE_ENV) or 3 * beat)


class StaleTrialCallback:
    """Runs when a driver fails a trial whose worker stopped beating: says so on stderr and queues its parameters once
    more (Optuna's ``RetryHeartbeatStaleTrialCallback``: the copy's ``failed_trial`` system attribute names it)."""

    def __init__(self, max_retry: int = RETRIES_OF_A_LOST_TRIAL) -> None:
        self.max_retry = max_retry

    def __call__(self, study: Any, trial: Any) -> None:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, trial)
        print(f"[more.search] trial {trial.number} of study {study.study_name} failed: no heartbeat within the grace "
              f"period (its worker was lost); queued again", file=sys.stderr, flush=True)


def make_storage(path_or_url: str) -> Any:
    """The Optuna storage: an RDB URL (with heartbeats) as given, else a journal file at the path."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in path_or_url:
        beat, grace = heartbeat_settings()
        kwargs: dict[str, Any] = {"pool_pre_ping": True} if not path_or_url.startswith("sqlite") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(path_or_url, engine_kwargs=kwargs, heartbeat_interval=beat,
                                              grace_period=grace, heartbeat_stale_trial_callback=StaleTrialCallback())
    Path(path_or_url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path_or_url)))


def has_heartbeats(storage: Any) -> bool:
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter is not None and getter() is not None


def fail_stale(study: Any) -> int:
    """Fail the trials left RUNNING by a driver that is gone; returns how many.

    With heartbeats, only trials whose heartbeat stopped (another live driver's running trials are left alone);
    without, every RUNNING trial (a journal study is one driver's at a time)."""
    import optuna

    running = optuna.trial.TrialState.RUNNING
    before = {t._trial_id for t in study.get_trials(deepcopy=False, states=(running,))}
    if has_heartbeats(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t._trial_id for t in study.get_trials(deepcopy=False, states=(running,))}
        return len(before - after)
    for trial_id in before:
        study._storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    return len(before)


class DriverHeartbeat:
    """Beats for the trials this process asked (:meth:`asked`) while they run, every heartbeat interval: the
    ask-and-tell counterpart of what ``study.optimize`` does (used around the training search's Tune run).

    Use as a context manager; a storage without heartbeats makes it do nothing.
    """

    _current: DriverHeartbeat | None = None  # the one running in this process (the define-by-run function finds it)

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def asked(cls, trial: Any) -> None:
        """Note a trial this driver just asked for (called from the search space's define-by-run function)."""
        beat = cls._current  # (Optuna wraps an RDB storage in a cache: the trial's storage object is another one)
        if beat is not None:
            with beat._lock:
                beat.trial_ids.add(trial._trial_id)
            beat.storage.record_heartbeat(trial._trial_id)

    def __enter__(self) -> DriverHeartbeat:
        if has_heartbeats(self.storage):
            DriverHeartbeat._current = self
            self._thread = threading.Thread(target=self._loop, name="more-optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if DriverHeartbeat._current is self:
            DriverHeartbeat._current = None
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        import optuna

        interval = self.storage.get_heartbeat_interval()
        while not self._stop.wait(interval):
            with self._lock:
                ids = sorted(self.trial_ids)
            for trial_id in ids:
                try:
                    if self.storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
                        with self._lock:
                            self.trial_ids.discard(trial_id)
                        continue
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 -- a missed beat is retried; a long outage fails the trial
                    print(f"[more.search] heartbeat of trial id {trial_id} not recorded: {type(exc).__name__}",
                          file=sys.stderr, flush=True)


def shown(where: str) -> str:
    """A storage as messages show it (an RDB URL without its password)."""
    return redact(where) if "://" in where else where
