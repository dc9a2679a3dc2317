"""A background thread that keeps a trial's MLflow run caught up, so that no tracking call runs in the training loop.

The trial's thread only records (the outbox, :mod:`more.tracking.outbox`) and pokes the sender. The sender runs one
sync pass (:class:`more.tracking.sync.RunSync`) per poke; when a pass fails (server down, timeout) it waits and tries
again, 1 s doubling to 30 s, for as long as the trial lives (new work starts a pass at once). A pass is safe to
repeat, so a pass that failed midway is simply run again. The MLflow client's own retries
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by default, backoff factor 2) happen inside a pass, in this thread: they delay
the catch-up, never the training. :class:`Answered` notes when the store last answered, so that the end of a trial
can tell a slow upload (worth waiting for) from a store that stopped answering.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0
RETRY_S = 5.0  # deep in an outage, how long a wait gives the one more try (a client may sit in its own retries)


class Sender:
    """Runs ``work()`` in a daemon thread after each :meth:`poke`, retrying failures with backoff.

    Args:
        work: one sync pass; raises on failure.
        name: the thread's name.
        on_failure: called with the exception after each failed pass (in the sender's thread).
        on_recovery: called with the seconds the store was unreachable when a pass succeeds after failures.
        backoff: the first and the longest wait between failed passes (default 1 s and 30 s).
    """

    def __init__(self, work: Callable[[], Any], *, name: str = "more-tracking",
                 on_failure: Callable[[BaseException], None] | None = None,
                 on_recovery: Callable[[float], None] | None = None,
                 backoff: tuple[float, float] | None = None) -> None:
        self._work, self._on_failure, self._on_recovery = work, on_failure, on_recovery
        self._first_backoff, self._max_backoff = backoff or (BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self._cond = threading.Condition()
        self._wanted = 0  # pokes so far
        self._done = 0  # the poke count the last successful pass started from
        self._attempted = 0  # the poke count the last pass (successful or not) started from
        self._stopped = False
        self.busy_s = 0.0  # seconds spent in passes (in this thread, off the training loop)
        self.failures = 0  # consecutive failed passes
        self.failing_since: float | None = None  # monotonic time of the first failure of the current streak
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """There is new work: run a pass soon (at once unless backing off)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    @property
    def caught_up(self) -> bool:
        with self._cond:
            return self._done >= self._wanted

    def wait(self, *, timeout_s: float | None = None, give_up_on_failure: bool = False,
             idle_s: float | None = None, last_answer: Callable[[], float] | None = None,
             retry_s: float = RETRY_S) -> bool:
        """Wait until every poke so far is done. Returns whether it caught up.

        Args:
            timeout_s: give up after this long.
            give_up_on_failure: give up as soon as a pass started after the call fails.
            idle_s: give up once the store has not answered for this long (since the call, or since
                ``last_answer()``, the monotonic time of its last answer): a store that answers, however slowly
                (a big upload), is waited for; one that stopped answering is not. While the sender is failing,
                the time before the call counts too: a store that has been down for ``idle_s`` already is tried
                once more, for at most ``retry_s`` unless it answers meanwhile, and not waited for again (a trial
                ending deep in an outage frees its slot within seconds; one ending after the store came back catches
                up).
            last_answer: see ``idle_s``.
            retry_s: see ``idle_s``.
        """
        start = time.monotonic()
        deadline = None if timeout_s is None else start + timeout_s
        with self._cond:
            target = self._wanted
            while self._done < target:
                now = time.monotonic()
                failed = self.failing_since is not None and self._attempted >= target
                if give_up_on_failure and failed:
                    return False
                if idle_s is not None:
                    last = last_answer() if last_answer is not None else 0.0
                    answered = max(start, last)
                    if self.failing_since is not None:  # down: since its last answer, or since it first failed
                        down_since = last if last > 0.0 else self.failing_since
                        if failed:  # the pass holding this work failed too
                            answered = down_since
                        elif last < start and now - down_since >= idle_s:  # trying once more, no answer yet
                            answered = start - idle_s + min(idle_s, retry_s)
                    if now - answered >= idle_s:
                        return False
                if deadline is not None and now >= deadline:
                    return False
                self._cond.wait(timeout=0.1)
            return True

    def close(self) -> None:
        """Stop after the current pass (a pass in flight finishes or fails on its own)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _loop(self) -> None:
        delay = self._first_backoff
        while True:
            with self._cond:
                while not self._stopped and self._done >= self._wanted:
                    self._cond.wait()
                if self._stopped:
                    return
                target = self._wanted
            started = time.monotonic()
            try:
                self._work()
            except Exception as exc:  # noqa: BLE001 -- any failure is retried; the outbox keeps the work
                with self._cond:
                    self.busy_s += time.monotonic() - started
                    self.failures += 1
                    self.last_error = exc
                    self._attempted = target
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                    self._cond.notify_all()
                if self._on_failure is not None:
                    self._on_failure(exc)
                with self._cond:  # new work (an evaluation, the trial's end) cuts the wait short
                    self._cond.wait_for(lambda t=target: self._stopped or self._wanted > t, timeout=delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            with self._cond:
                down_for = time.monotonic() - self.failing_since if self.failing_since is not None else None
                self._done = self._attempted = target
                self.busy_s += time.monotonic() - started
                self.failures, self.failing_since, self.last_error = 0, None, None
                self._cond.notify_all()
            delay = self._first_backoff
            if down_for is not None and self._on_recovery is not None:
                self._on_recovery(down_for)


class Answered:
    """A client that notes when the store last answered one of its calls (how :meth:`TrialTracker.finish` tells a
    slow upload, worth waiting for, from a store that stopped answering)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.answered_at = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self.answered_at = time.monotonic()
            return out

        return call
