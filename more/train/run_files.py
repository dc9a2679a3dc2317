"""What the trainer writes into its run folder, each write safe on a full disk.

Every write goes through :mod:`more.outputs`: files are replaced atomically (temporary name, then rename),
``metrics.jsonl`` grows by whole lines (a line cut short by a full disk is truncated away), and a full disk raises
:class:`~more.outputs.DiskFullError` (one ``error: disk full: ...`` line, exit 2) after removing what was half
written. Before the loop the trainer compares the free space with what the run will need at its peak
(:func:`space_needed`) and warns when it falls short.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from more.outputs import DiskFullError, atomic_write, human_bytes, on_disk_full

# Bytes one evaluation adds, per class (the per-class table in eval/iter_N.md, the metrics.jsonl line) and fixed
# (metrics.json is rewritten, not kept per evaluation); measured on the synthetic and VOC tables, rounded up.
EVAL_BYTES_PER_CLASS = 400
EVAL_BYTES_FIXED = 4000
LOG_LINE_BYTES = 600  # one metrics.jsonl record of the training losses


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``."""
    atomic_write(path, text, what=path.name)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``data`` as indented JSON."""
    atomic_write(path, json.dumps(data, indent=2), what=path.name)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; on a full disk the file is cut back to its previous length (no partial line)."""
    line = (json.dumps(record) + "\n").encode()
    size = path.stat().st_size if path.exists() else 0
    try:
        with on_disk_full(path, what=path.name, need=len(line)), path.open("ab") as fh:
            fh.write(line)
            fh.flush()
    except DiskFullError:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise


def keep_records_until(path: Path, iteration: int) -> None:
    """Drop the records an interrupted run wrote after the checkpoint it resumes from, so the file reads like one
    run (rewritten atomically)."""
    if not path.exists():
        write_text(path, "")
        return
    kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("iter", 0) <= iteration]
    write_text(path, "".join(ln + "\n" for ln in kept))


def checkpoint_iterations(cfg: Any, start: int) -> list[int]:
    """The iterations after ``start`` at which the trainer writes a checkpoint (every evaluation, every
    ``train.ckpt_every``, the last)."""
    t = cfg.train
    return [n for n in range(start + 1, t.max_iters + 1)
            if n % t.eval_every == 0 or n % t.ckpt_every == 0 or n == t.max_iters]


def space_needed(cfg: Any, *, checkpoint_bytes: int, start: int, existing: int, num_classes: int) -> tuple[int, str]:
    """The most bytes the rest of the run adds to its folder at once, and what that is, in words.

    A new checkpoint is complete before the oldest beyond ``train.keep_ckpts`` is removed, so the peak holds
    ``keep_ckpts + 1`` of them; ``existing`` are already on disk (a resumed run).
    """
    t = cfg.train
    new = len(checkpoint_iterations(cfg, start))
    peak = max(min(1, new), min(t.keep_ckpts + 1, existing + new) - existing)
    evals = len([n for n in range(start + 1, t.max_iters + 1) if n % t.eval_every == 0 or n == t.max_iters])
    logs = (t.max_iters - start) // max(t.log_every, 1) + 1
    eval_bytes = evals * (EVAL_BYTES_PER_CLASS * (num_classes + 1) + EVAL_BYTES_FIXED) + logs * LOG_LINE_BYTES
    words = (f"{peak} checkpoint(s) of about {human_bytes(checkpoint_bytes)} (train.keep_ckpts={t.keep_ckpts}, "
             f"plus the one being written) and {evals} evaluation(s)")
    return peak * checkpoint_bytes + eval_bytes, words


def checkpoint_disk_full(exc: DiskFullError, run_dir: Path, last: Path | None) -> DiskFullError:
    """The trainer's disk-full error for a checkpoint: the outputs module's line plus what survives and how to
    continue."""
    kept = (f"; the last complete checkpoint {last} is kept, and --resume continues from it once there is room"
            if last is not None else f"; no checkpoint of the run in {run_dir} was complete yet")
    return DiskFullError(f"{exc}{kept}", path=exc.path, free=exc.free, need=exc.need)
