"""A trial that fails because its disk is full fails with the one ``disk full: ...`` line, and Tune's retry on a disk
that is still full fails at once with the same line instead of training again up to the failed checkpoint.

:func:`disk_full_guard` wraps the trial's training: a full disk (a :class:`~more.outputs.DiskFullError` from the
trainer, or an ``ENOSPC`` from Tune copying the checkpoint into its storage) leaves ``disk_full.json`` in the run
folder (the half-written files are already gone, so the few bytes fit). :func:`refuse_full_disk_retry`, called as
the next attempt starts, reads it: while the filesystem still has less free than the failed write needed, the
attempt raises the recorded error at once; with room again it removes the record and the trial continues from its
last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from more.outputs import DiskFullError, disk_full_error, free_bytes, human_bytes, is_disk_full, nearest_existing

DISK_FULL_FILE = "disk_full.json"
MIN_ROOM = 1_000_000  # when the failed write's size is unknown: room it must have gained before a retry trains


def record_disk_full(run_dir: Path, error: DiskFullError) -> None:
    """Leave the error beside the run for the next attempt (best effort: the disk is full)."""
    record = {"error": str(error), "path": str(error.path), "free": error.free, "need": error.need}
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DISK_FULL_FILE).write_text(json.dumps(record) + "\n")


def refuse_full_disk_retry(run_dir: Path) -> None:
    """Raise the recorded :class:`DiskFullError` when an earlier attempt of this trial filled the disk and the disk
    still lacks the room that write needed; otherwise forget the record.

    Raises:
        DiskFullError: the earlier error, marked as not retried.
    """
    marker = run_dir / DISK_FULL_FILE
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return
    where = Path(record.get("path") or run_dir)
    free = free_bytes(where)
    need = record.get("need") or (record.get("free") or 0) + MIN_ROOM
    if free < need:
        raise DiskFullError(f"{record['error']} [not retried: {nearest_existing(where)} still has "
                            f"{human_bytes(free)} free]", path=where, free=free, need=record.get("need"))
    marker.unlink(missing_ok=True)


@contextlib.contextmanager
def disk_full_guard(run_dir: Path) -> Iterator[None]:
    """Inside: a write that fails for lack of space becomes (or stays) a :class:`DiskFullError` and is recorded for
    :func:`refuse_full_disk_retry`; other errors pass unchanged."""
    try:
        yield
    except DiskFullError as exc:
        record_disk_full(run_dir, exc)
        raise
    except Exception as exc:
        if not (is_disk_full(exc) or "disk full: " in str(exc)):  # the latter: rank 0's error relayed by Ray Train
            raise
        error = disk_full_error(run_dir, what="the trial's files")
        error = DiskFullError(f"{error} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})", path=error.path,
                              free=error.free, need=error.need)
        record_disk_full(run_dir, error)
        raise error from exc
