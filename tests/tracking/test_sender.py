"""The sender's wait at the end of a trial: a store that answers is waited for; one that has been down for the idle
limit already is not waited for again (the trial frees its slot at once; reconciliation fills the run in)."""

from __future__ import annotations

import threading
import time

from more.tracking.sender import Sender


def _down_sender(fail_for: threading.Event, backoff: float = 0.05) -> Sender:
    def work() -> None:
        if fail_for.is_set():
            raise ConnectionError("store down")

    return Sender(work, backoff=(backoff, backoff))


def _failing(sender: Sender) -> None:
    """Poke ``sender`` and return once its pass has failed."""
    sender.poke()
    deadline = time.monotonic() + 10
    while sender.failing_since is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_store_down_longer_than_the_idle_limit_is_not_waited_for_again():
    down = threading.Event()
    down.set()
    sender = _down_sender(down)
    answered = time.monotonic() - 60.0  # its last answer, a minute ago
    _failing(sender)
    t0 = time.monotonic()
    assert sender.wait(idle_s=30.0, last_answer=lambda: answered) is False
    assert time.monotonic() - t0 < 1.0  # not another 30 s
    sender.close()


def test_a_store_that_never_answered_counts_from_its_first_failure():
    down = threading.Event()
    down.set()
    sender = _down_sender(down)
    _failing(sender)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert sender.wait(idle_s=0.5, last_answer=lambda: 0.0) is False
    assert time.monotonic() - t0 < 0.45  # 0.3 s of the 0.5 s had passed before the call
    sender.close()


def test_a_healthy_but_quiet_store_is_waited_for_from_the_call():
    down = threading.Event()
    sender = _down_sender(down)  # answers
    answered = time.monotonic() - 3600.0  # nothing to send for an hour: quiet, not down
    sender.poke()
    assert sender.wait(idle_s=5.0, last_answer=lambda: answered) is True
    sender.close()


def test_a_store_that_comes_back_within_the_limit_is_caught_up():
    down = threading.Event()
    down.set()
    sender = _down_sender(down)
    sender.poke()
    threading.Timer(0.3, down.clear).start()
    t0 = time.monotonic()
    assert sender.wait(idle_s=5.0, last_answer=lambda: time.monotonic() - 0.1) is True
    assert time.monotonic() - t0 < 5.0
    sender.close()


def test_a_store_back_after_a_long_outage_is_tried_once_more_and_caught_up():
    """The end of a trial pokes a sender that failed long ago and is backing off: the store came back meanwhile, so
    the pass the poke starts succeeds and the wait says so (it does not give up before trying)."""
    down = threading.Event()
    down.set()
    sender = _down_sender(down, backoff=30.0)  # the next retry is far away: only the poke starts a pass
    _failing(sender)
    down.clear()  # back, but the sender has not tried since
    sender.poke()  # the trial's end
    t0 = time.monotonic()
    assert sender.wait(idle_s=2.0, last_answer=lambda: time.monotonic() - 600.0) is True
    assert time.monotonic() - t0 < 2.0
    assert sender.failing_since is None
    sender.close()


def test_a_store_still_down_when_tried_once_more_is_not_waited_for():
    down = threading.Event()
    down.set()
    sender = _down_sender(down)
    _failing(sender)
    sender.poke()  # the trial's end, with the store still down
    t0 = time.monotonic()
    assert sender.wait(idle_s=30.0, last_answer=lambda: time.monotonic() - 60.0) is False
    assert time.monotonic() - t0 < 1.0  # the pass holding the end failed: not another 30 s
    sender.close()


def test_one_more_try_that_hangs_deep_in_an_outage_is_given_up_after_the_retry_time():
    """The pass holding the trial's end hangs (a client sitting in its own retries against a dead store): the wait
    gives up after ``retry_s``, not after the idle limit."""
    down = threading.Event()
    down.set()
    release = threading.Event()
    passes = []

    def work() -> None:
        passes.append(time.monotonic())
        if len(passes) > 1:
            release.wait(10.0)  # the one more try hangs
        if down.is_set():
            raise ConnectionError("store down")

    sender = Sender(work, backoff=(30.0, 30.0))
    _failing(sender)
    sender.poke()  # the trial's end
    t0 = time.monotonic()
    assert sender.wait(idle_s=30.0, last_answer=lambda: time.monotonic() - 600.0, retry_s=0.5) is False
    assert 0.4 < time.monotonic() - t0 < 3.0 and len(passes) == 2  # it did try once more
    release.set()
    sender.close()
