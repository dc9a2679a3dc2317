"""Claims: two launches that share trials (same content key) never both run them.

A launch claims every trial it is about to run by creating ``<storage>/.claims/<key>.json`` with ``O_CREAT |
O_EXCL`` (the file names its owner: host, pid, experiment, trial). Creation is atomic on a local filesystem and on
NFS v3 and later (the server checks existence and creates in one operation), so exactly one launch gets each claim.
A trial whose claim another live launch holds is left to that launch: this launch trains the rest, then waits until
those claims are released (:func:`wait_released`) and reports the results the other launch left. The owner
refreshes its claims' modification time every :data:`HEARTBEAT_S` while it runs and removes them when it ends.

Stale claims are taken over: one whose owner is on this host and no longer exists, or one not refreshed for
:data:`STALE_S` (an owner on another host that died). Taking over renames the stale file away first (``rename`` is
atomic), so two launches that both saw it stale still race through ``O_EXCL``.

Object stores (``s3://``, ``gs://``) have no exclusive create: there no claims are made (a warning says so), and
two launches sharing trials there may both train them; each then reports its own result (:func:`supported`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIMS_DIR = ".claims"
HEARTBEAT_S = 30.0
STALE_S = 600.0


def supported(storage: str) -> bool:
    return "://" not in storage


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Claim:
    path: Path
    owner: dict[str, Any]


class ClaimSet:
    """The claims of one launch (a context manager: released on exit; a heartbeat thread keeps them fresh)."""

    def __init__(self, storage: str, *, experiment: str, stale_s: float = STALE_S,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.root = Path(storage) / CLAIMS_DIR
        self.experiment, self.stale_s, self.heartbeat_s = experiment, stale_s, heartbeat_s
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "experiment": experiment,
                      "token": secrets.token_hex(8)}
        self.held: dict[str, Claim] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _file(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def holder(self, key: str) -> dict[str, Any] | None:
        """The owner of a live claim on ``key`` by another launch, else None."""
        path = self._file(key)
        try:
            owner = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if owner.get("token") == self.owner["token"] or self._stale(owner, mtime):
            return None
        return owner

    def _stale(self, owner: dict[str, Any], mtime: float) -> bool:
        if owner.get("host") == self.owner["host"] and not _pid_alive(int(owner.get("pid", 0))):
            return True
        return time.time() - mtime > self.stale_s

    def claim(self, key: str, trial: str) -> dict[str, Any] | None:
        """Claim ``key``; returns None when this launch holds it now, else the owner holding it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._file(key)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner, mtime = json.loads(path.read_text()), path.stat().st_mtime
                except (OSError, ValueError):  # being written or removed right now: look again
                    time.sleep(0.05)
                    continue
                if owner.get("token") == self.owner["token"]:
                    return None
                if not self._stale(owner, mtime):
                    return owner
                try:  # take the stale claim over: move it away, then race for O_EXCL like everyone else
                    os.replace(path, path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}"))
                except OSError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({**self.owner, "trial": trial, "created": time.time()}))
            self.held[key] = Claim(path, self.owner)
            return None
        return json.loads(path.read_text()) if path.is_file() else {"host": "?", "pid": 0}

    def refresh(self) -> None:
        now = time.time()
        for claim in list(self.held.values()):
            try:
                os.utime(claim.path, (now, now))
            except OSError:
                pass

    def release(self) -> None:
        for key, claim in list(self.held.items()):
            try:
                if json.loads(claim.path.read_text()).get("token") == self.owner["token"]:
                    claim.path.unlink()
            except (OSError, ValueError):
                pass
            self.held.pop(key, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def __enter__(self) -> ClaimSet:
        self._thread = threading.Thread(target=self._beat, name="more-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.release()


def wait_released(claims: ClaimSet, keys: dict[str, str], *, poll_s: float = 10.0, report_s: float = 300.0,
                  say: Any = print) -> None:
    """Wait until no live launch holds a claim on any of ``keys`` ({content key: trial name}): each is released
    (its owner ended) or stale (its owner is gone). Says which trials it waits for, again every ``report_s``."""
    waiting = dict(keys)
    last = 0.0
    while True:
        holders = {key: owner for key in waiting if (owner := claims.holder(key)) is not None}
        waiting = {key: waiting[key] for key in holders}
        if not waiting:
            return
        if time.monotonic() - last >= report_s:
            last = time.monotonic()
            names = ", ".join(f"{name} ({owner_text(holders[key])})" for key, name in waiting.items())
            say(f"waiting for {len(waiting)} trial{'s' if len(waiting) > 1 else ''} another launch is training: "
                f"{names}")
        time.sleep(poll_s)


def owner_text(owner: dict[str, Any]) -> str:
    return f"pid {owner.get('pid')} on {owner.get('host')} (experiment {owner.get('experiment', '?')})"
