"""What every ``data prepare`` shares: the output folder's rules and state, resumable atomic writes, the content hash
recorded in ``ROOT/prepare.json``, and progress with counts and ETA.

A prepare run is resumable because every output file is written under a temporary name and renamed (a file that
exists is complete) and ``prepare.json`` records the options the tree is being built with (``complete: false``
until the end): a second run with the same options skips the files already there; other options are refused. On a
finished tree a second run only recomputes the content hash and compares it with the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from more.data.masks import atomic_save
from more.outputs import MARK, check_output_dir, is_inside, on_disk_full, own_dir
from more.train.progress import Progress, format_seconds

PREPARE_FILE = "prepare.json"
FORMAT_VERSION = 1


class PrepareError(ValueError):
    """A prepare that cannot start or finish for a reason the user can fix (named in the message)."""


# ---------------------------------------------------------------------------------------------- progress


class Ticker:
    """Counts with ETA: a live bar on a terminal, otherwise a line at every tenth of the work and at the end."""

    def __init__(self, total: int, desc: str, *, stream: TextIO | None = None) -> None:
        self.progress = Progress(total, desc=desc, stream=stream or sys.stderr)
        self.total, self.done = total, 0
        self._next_line = 0
        self._last_draw = 0.0

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.progress.tty:
            now = time.perf_counter()
            if now - self._last_draw > 0.2 or self.done >= self.total:
                self.progress.update(self.done)
                self._last_draw = now
        elif self.done >= self._next_line or self.done >= self.total:
            self.progress.line(self.progress.text(self.done))
            step = max(1, self.total // 10)
            self._next_line = (self.done // step + 1) * step

    def close(self) -> None:
        if self.progress.tty:
            self.progress.line(self.progress.text(self.done))


def run_parallel(items: Iterable[Any], work: Callable[[Any], Any], ticker: Ticker, *, workers: int) -> list[Any]:
    """``work(item)`` for every item on ``workers`` threads (PNG and JPEG coding release the GIL), ticking once per
    item; at most ``4 * workers`` items are in flight, so a generator that reads an archive is not run ahead."""
    results: list[Any] = []
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        pending = []
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= 4 * max(1, workers):
                results.append(pending.pop(0).result())
                ticker.tick()
        for future in pending:
            results.append(future.result())
            ticker.tick()
    except BaseException:  # an error or Ctrl-C: what has not started is dropped (the next run does it)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


# ------------------------------------------------------------------------------------------- the output


def check_out(out: str | os.PathLike, sources: Mapping[str, str | os.PathLike], *, force: bool) -> str:
    """Preflight of ``--out`` (writes nothing): never inside a source (not even with ``--force``), and the output rules
    of :func:`more.outputs.check_output_dir` (a folder holding files more did not create needs ``--force``).

    Raises:
        OutputError: naming the option and the folder.
    """
    from more.outputs import OutputError

    for what, src in sources.items():
        if Path(src).expanduser().exists() and is_inside(out, src):
            raise OutputError(f"--out {Path(out).expanduser().absolute()}: is inside {what} {src}, which prepare "
                              f"reads and never writes into; choose a folder outside it")
    return check_output_dir(out, what="--out", reads=sources, force=force, recognised=(PREPARE_FILE,))


@dataclass
class Outcome:
    """What a prepare run did (or found)."""

    root: Path
    dataset: str
    counts: dict[str, int]
    count_check: list[str] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    verified_only: bool = False
    notes: list[str] = field(default_factory=list)
    content_hash: str = ""

    def format(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if self.verified_only:
            head = f"{self.root}: already prepared ({self.dataset}: {counts}); content hash verified, nothing written"
        else:
            head = (f"{self.root}: prepared {self.dataset} ({counts}) in {format_seconds(self.seconds)}: "
                    f"{self.written} files written, {self.skipped} already there")
        lines = [head, *(f"  {c}" for c in self.count_check), *(f"  note: {n}" for n in self.notes)]
        if self.content_hash:
            lines.append(f"  content hash {self.content_hash} (in {self.root / PREPARE_FILE})")
        return "\n".join(lines)


def compare_counts(counts: Mapping[str, int], published: Mapping[str, int], release: str) -> list[str]:
    """One line per split: the count built against the published one."""
    lines = []
    for split, expected in published.items():
        got = counts.get(split, 0)
        verdict = "matches" if got == expected else f"differs by {got - expected:+d} from"
        lines.append(f"{split}: {got} images, {verdict} the published {expected} of {release}")
    return lines


class Workspace:
    """The tree one prepare run builds at ``root``.

    Args:
        root: the ``--out`` folder (already checked by :func:`check_out`).
        dataset: voc | coco | folder.
        options: the choices that decide the output; a resumed run must give the same.
        sources: how the user named each source -> its path (recorded, not compared).
    """

    def __init__(self, root: str | os.PathLike, dataset: str, options: Mapping[str, Any],
                 sources: Mapping[str, str | os.PathLike]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.dataset = dataset
        self.options = dict(options)
        self.sources = {k: str(Path(v).expanduser().absolute()) for k, v in sources.items()}
        self.state_file = self.root / PREPARE_FILE
        self.written = 0  # files this run wrote (counted under a lock: workers write in parallel)
        self.skipped = 0
        self._lock = threading.Lock()
        self.started = time.time()

    def elapsed(self) -> float:
        return time.time() - self.started

    # ------------------------------------------------------------------------------------------- state

    def recorded(self) -> dict[str, Any] | None:
        """The existing ``prepare.json``, or None."""
        if not self.state_file.is_file():
            return None
        try:
            record = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            raise PrepareError(f"{self.state_file}: unreadable ({exc}); prepare into a new --out") from None
        if not isinstance(record, dict) or record.get("dataset") != self.dataset:
            raise PrepareError(f"{self.state_file}: records another dataset ({record.get('dataset')!r} while "
                               f"preparing {self.dataset!r}); prepare into a new --out")
        return record

    def begin(self) -> dict[str, Any] | None:
        """Start or resume; returns the record of a finished tree (nothing to build), else None.

        Raises:
            PrepareError: the tree was started or finished with other options.
        """
        record = self.recorded()
        if record is not None and record.get("options") != self.options:
            state = "prepared" if record.get("complete") else "started"
            given = {k: v for k, v in self.options.items() if record.get("options", {}).get(k) != v}
            raise PrepareError(f"{self.root}: was {state} with {record.get('options')}, not {given}; run the same "
                               f"command as before to finish it, or prepare into a new --out")
        if record is not None and record.get("complete"):
            return record
        own_dir(self.root, command=f"data prepare {self.dataset}")
        self._save({"complete": False})
        return None

    def _save(self, extra: Mapping[str, Any]) -> None:
        record = {"format": FORMAT_VERSION, "dataset": self.dataset, "created_by": f"more data prepare {self.dataset}",
                  "options": self.options, "sources": self.sources,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)), **extra}
        self.write_file(PREPARE_FILE, (json.dumps(record, indent=1) + "\n").encode(), count=False)

    def finish(self, extra: Mapping[str, Any], *, hashed: list[str], sized: list[str]) -> str:
        """Hash the outputs and write ``prepare.json`` with ``complete: true``; returns the content hash."""
        digest = content_hash(self.root, hashed=hashed, sized=sized)
        self._save({**extra, "complete": True, "content_hash": digest, "hashed": hashed, "sized": sized,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - self.started, 1)})
        return digest

    # ------------------------------------------------------------------------------------------- files

    def exists(self, rel: str) -> bool:
        p = self.root / rel
        return p.is_symlink() or p.exists()

    def write_file(self, rel: str, data: bytes, *, count: bool = True) -> None:
        """Write ``ROOT/rel`` atomically (a full disk becomes one ``error: disk full`` line)."""
        path = self.root / rel
        with on_disk_full(path, what=rel, need=len(data)):
            atomic_save(path, data)
        if count:
            with self._lock:
                self.written += 1

    def link_file(self, rel: str, target: Path) -> None:
        """Make ``ROOT/rel`` a symbolic link to ``target`` (atomically; an existing link is replaced)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.lnk")
        tmp.unlink(missing_ok=True)
        with on_disk_full(path, what=rel):
            os.symlink(target, tmp)
            os.replace(tmp, path)
        with self._lock:
            self.written += 1

    def clean_partial(self, folders: Iterable[str]) -> int:
        """Remove temporary files a killed run left in ``folders`` (``.NAME.*.tmp`` / ``.lnk``); returns how many."""
        removed = 0
        for rel in folders:
            folder = self.root / rel
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.name.startswith(".") and entry.name.endswith((".tmp", ".lnk")):
                    os.unlink(entry.path)
                    removed += 1
        return removed


# ---------------------------------------------------------------------------------------------- hashing


def _walk(root: Path, rel: str) -> list[str]:
    """Files under ``root/rel`` (itself when a file), relative to ``root``, hidden names skipped, sorted."""
    top = root / rel
    if top.is_file() or top.is_symlink() and not top.is_dir():
        return [rel]
    out = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        out.extend((base / f).as_posix() for f in files if not f.startswith(".") and f != MARK)
    return sorted(out)


def content_hash(root: str | os.PathLike, *, hashed: list[str], sized: list[str], workers: int = 4) -> str:
    """``sha256:...`` over the files under ``hashed`` (each by its bytes) and ``sized`` (each by its size: images,
    which are the source's own) relative to ``root``; any file added, removed or changed there changes it."""
    root = Path(root)

    def file_sha(rel: str) -> str:
        h = hashlib.sha256()
        with open(root / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    total = hashlib.sha256()
    files = sorted({f for rel in hashed for f in _walk(root, rel)})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, digest in zip(files, pool.map(file_sha, files)):
            total.update(f"{rel}\0{digest}\n".encode())
    for rel in sorted({f for top in sized for f in _walk(root, top)}):
        total.update(f"{rel}\0size:{(root / rel).stat().st_size}\n".encode())
    return "sha256:" + total.hexdigest()


def verify(ws: Workspace, record: Mapping[str, Any], counts: dict[str, int]) -> Outcome:
    """A finished tree: recompute the content hash and compare it with ``prepare.json``.

    Raises:
        PrepareError: the tree changed after it was prepared.
    """
    start = time.perf_counter()
    digest = content_hash(ws.root, hashed=list(record.get("hashed", [])), sized=list(record.get("sized", [])))
    if digest != record.get("content_hash"):
        raise PrepareError(f"{ws.root}: changed since it was prepared (its content hash {digest} is not the "
                           f"{record.get('content_hash')} in {ws.state_file}); `python -m more data check "
                           f"{ws.root}` lists problems, or prepare into a new --out")
    return Outcome(ws.root, ws.dataset, dict(record.get("counts", counts)), list(record.get("count_check", [])),
                   seconds=time.perf_counter() - start, verified_only=True, content_hash=digest)


def write_lists(ws: Workspace, folder: str, lists: Mapping[str, list[str]]) -> list[str]:
    """Write ``folder/SPLIT.txt`` (one name a line) for every split; returns their relative paths."""
    out = []
    for split, names in lists.items():
        rel = f"{folder}/{split}.txt" if folder else f"{split}.txt"
        ws.write_file(rel, "".join(f"{n}\n" for n in names).encode(), count=False)
        out.append(rel)
    return out


def write_labels(ws: Workspace, rel: str, labels: Mapping[str, list[int]]) -> None:
    """Image-level labels ``{name: [class indices 1..C]}`` as JSON (``data.labels_file`` reads it)."""
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(labels.items()))
    ws.write_file(rel, ("{\n" + body + "\n}\n").encode(), count=False)
