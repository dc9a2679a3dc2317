"""An inference's output folder: its settings, a per-image completion record, and the one thread that writes files.

Resuming works because of three rules:

* ``settings.json`` holds everything that decides the outputs' bytes (:func:`check_settings`); a resume with other
  settings into the same folder is refused, naming each difference.
* Every file is written atomically (``more.outputs.atomic_write``), and only then is the image's output appended to
  ``done.jsonl`` (one JSON line per image and output, with its confusion counts), flushed and fsynced per batch.
  A kill at any moment leaves whole files and a record of whole outputs; a torn last line is dropped on reopening.
* The driver reruns every batch of the fixed batch grid that holds an image with a missing output and writes only
  what is missing (:meth:`InferStore.missing`), so the rerun images go through the same batch as before: the same
  float rounding, the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from more.eval.infer_items import CrfDone, ImageWork, add_sparse
from more.outputs import OutputError, atomic_write, on_disk_full

SETTINGS_FILE = "settings.json"
JOURNAL_FILE = "done.jsonl"
RECOGNISED = (SETTINGS_FILE, JOURNAL_FILE, "metrics.json")  # an infer folder made before the ownership marker
# For the kill-and-resume tests: seconds the writer waits after recording each unit, so that a kill lands midway.
DELAY_ENV = "MORE_FAULT_INFER_DELAY_S"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # the config's values are named by their own dotted keys
            out.update(_flat(value, "" if key == "config" else f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: A then, B now`` for every setting that differs (dotted keys, sorted)."""
    a, b = _flat(before), _flat(now)
    return [f"{key}: {json.dumps(a.get(key))} then, {json.dumps(b.get(key))} now"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def check_settings(out: str | os.PathLike, settings: dict[str, Any], *, what: str = "--out") -> bool:
    """Refuse to resume into ``out`` when it holds an inference with other settings; write nothing.

    Returns:
        True when ``out`` holds an earlier (possibly finished) inference with the same settings.

    Raises:
        OutputError: the settings differ (each difference named) or ``settings.json`` is unreadable.
    """
    path = Path(out) / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{what} {Path(out)}: {path.name} is unreadable ({exc}); choose another folder") from exc
    differences = settings_differences(before, json.loads(json.dumps(settings)))
    if differences:
        raise OutputError(f"{what} {Path(out)}: holds an inference with other settings ({'; '.join(differences)}); "
                          f"run it again with the same settings to resume, or choose another folder")
    return True


def write_settings(out: str | os.PathLike, settings: dict[str, Any]) -> None:
    atomic_write(Path(out) / SETTINGS_FILE, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def batch_grid(count: int, batch_size: int) -> list[list[int]]:
    """The fixed batches of a split: ``[[0..B-1], [B..2B-1], ...]`` (the same on every run and resume)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


class InferStore:
    """The files and the completion record of one inference folder.

    ``submit_net`` / ``submit_crf`` queue finished images; a single writer thread writes their files, then records
    them. Errors of that thread (a full disk included) are raised by the next ``submit_*`` or by ``close``.

    Args:
        out: the output folder (created and marked by the caller).
        outputs: the output names, the first one without CRF (``options.outputs``).
        k: number of classes including background.
        max_pending: queued units before ``submit_*`` blocks (bounds the memory of encoded files).
        on_record: called in the writer thread after each unit is recorded (progress).
    """

    def __init__(self, out: str | os.PathLike, outputs: Sequence[str], k: int, *, max_pending: int = 32,
                 on_record: Callable[[], None] | None = None) -> None:
        self.out, self.outputs, self.k = Path(out), tuple(outputs), k
        self.path = self.out / JOURNAL_FILE
        self._lock = threading.Lock()
        self.recorded: dict[str, set[str]] = {o: set() for o in self.outputs}
        self._hists = {o: np.zeros(k * k, dtype=np.int64) for o in self.outputs}
        self.decoder_labels: set[str] = set()
        self._complete = 0  # images with every output
        self._load()
        self.on_record = on_record
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._discard = False
        self._delay = float(os.environ.get(DELAY_ENV) or 0)
        self._fh: Any = None
        self._thread = threading.Thread(target=self._loop, name="more-infer-write", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------ record

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line torn by a kill or a full disk: drop it, or the next append would extend it
            with self.path.open("r+b") as fh:
                fh.truncate(end)
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
                name, output, hist = entry["name"], entry["output"], entry["hist"]
            except (ValueError, KeyError, TypeError):
                continue  # a line that does not parse records nothing; the image is redone
            if output in self.recorded and name not in self.recorded[output]:
                self._add(name, output, hist, bool(entry.get("decoder")))

    def _add(self, name: str, output: str, hist: Any, decoder: bool) -> None:
        self.recorded[output].add(name)
        add_sparse(self._hists[output], hist)
        if decoder:
            self.decoder_labels.add(name)
        if all(name in names for names in self.recorded.values()):
            self._complete += 1

    def missing(self, names: Iterable[str]) -> tuple[set[str], set[str]]:
        """``(names without their first output, names without their CRF output)`` among ``names``."""
        names = list(names)
        with self._lock:
            first = {n for n in names if n not in self.recorded[self.outputs[0]]}
            second = {n for n in names if len(self.outputs) > 1 and n not in self.recorded[self.outputs[1]]}
        return first, second

    def pending(self, grid: Sequence[Sequence[int]], names: Sequence[str]) -> list[list[int]]:
        """The batches of ``grid`` (indices into ``names``) that hold an image with a missing output."""
        out = []
        for batch in grid:
            first, second = self.missing(names[i] for i in batch)
            if first or second:
                out.append(list(batch))
        return out

    def finished(self, names: Iterable[str]) -> int:
        """Images of ``names`` that have every output."""
        with self._lock:
            return sum(1 for n in names if all(n in r for r in self.recorded.values()))

    def counts(self) -> tuple[int, ...]:
        """``(images with every output, images with output 1, [images with output 2])`` (cheap: for progress)."""
        with self._lock:
            return (self._complete, *(len(self.recorded[o]) for o in self.outputs))

    def hists(self) -> dict[str, np.ndarray]:
        """(K, K) confusion matrix per output over every recorded image (this run and the earlier ones)."""
        with self._lock:
            return {o: h.reshape(self.k, self.k).copy() for o, h in self._hists.items()}

    # ------------------------------------------------------------------------------------------------ writing

    def submit_net(self, works: Sequence[ImageWork]) -> None:
        """Queue a batch's first outputs (images already recorded are skipped)."""
        self._put([(w.name, w.output, w.files, w.hist, w.from_decoder) for w in works])

    def submit_crf(self, dones: Sequence[CrfDone]) -> None:
        """Queue CRF outputs."""
        self._put([(d.name, d.output, d.files, d.hist, False) for d in dones])

    def _put(self, unit: list[tuple[str, str, dict[str, bytes], np.ndarray, bool]]) -> None:
        while True:
            self.raise_error()
            try:
                self._queue.put(unit, timeout=0.5)
                return
            except queue.Full:
                continue

    def raise_error(self) -> None:
        """Raise the writer thread's error, if it had one."""
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            unit = self._queue.get()
            if unit is None:
                return
            if self._error is not None or self._discard:
                continue  # drain: nothing more is written after a failure
            try:
                self._write(unit)
            except BaseException as exc:  # noqa: BLE001 -- handed to the driver thread, which raises it
                self._error = exc

    def _write(self, unit: list[tuple[str, str, dict[str, bytes], np.ndarray, bool]]) -> None:
        fresh = []
        for name, output, files, hist, decoder in unit:
            with self._lock:
                if name in self.recorded[output]:
                    continue
            for relative, data in files.items():
                atomic_write(self.out / relative, data)
            fresh.append((name, output, hist, decoder))
        if not fresh:
            return
        lines = []
        for name, output, hist, decoder in fresh:
            entry: dict[str, Any] = {"name": name, "output": output, "hist": np.asarray(hist).tolist()}
            if decoder:
                entry["decoder"] = True
            lines.append(json.dumps(entry, separators=(",", ":")) + "\n")
        with on_disk_full(self.path, what="the completion record"):
            if self._fh is None:
                self._fh = self.path.open("a")
            self._fh.write("".join(lines))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        with self._lock:
            for name, output, hist, decoder in fresh:
                self._add(name, output, hist, decoder)
        if self.on_record is not None:
            self.on_record()
        if self._delay:
            time.sleep(self._delay)

    def close(self, *, discard: bool = False) -> None:
        """Write what is queued and raise the thread's error, if any; with ``discard`` (the driver is failing
        already) drop what is queued and raise nothing."""
        self._discard = discard
        self._queue.put(None)
        self._thread.join()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if not discard:
            self.raise_error()
