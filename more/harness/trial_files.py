"""What a trial keeps in its own run folder for retries and reuse, beside what Tune records.

- :func:`newest_valid_checkpoint` / :func:`evaluation_at` / :func:`checkpoint_iteration`: a retry continues from
  the newest checkpoint the trial wrote (atomic writes); when that is newer than Tune's, it first replays the
  evaluation made there, which Tune never received.
- :func:`seed_from_earlier`: a trial that continues an earlier, shorter result starts from a copy of it.
- :func:`write_identity`: ``identity.json``, the content key and the start of every attempt.
- :func:`inject_fault`: the deterministic fault the retry tests inject (``$MORE_FAULT_KILL_AFTER_CKPT``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint in the trial's run folder that loads (atomic writes make a torn one unlikely, but a
    checkpoint from a foreign or damaged folder must not stop the retry), else None."""
    if not (run_dir / "checkpoints").is_dir():
        return None  # a first attempt: no need to load the checkpoint code (and torch)
    from more.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint

    for folder in reversed(list_checkpoints(run_dir)):
        try:
            load_checkpoint(folder)
        except CheckpointError:
            continue
        return folder
    return None


def checkpoint_iteration(folder: str | os.PathLike) -> int | None:
    """The iteration of a checkpoint folder (its ``iteration`` file, else an ``iter_N`` name); None when unknown
    (e.g. a checkpoint on remote storage, or written before the file existed under another name)."""
    folder = Path(folder)
    try:
        return int((folder / "iteration").read_text())
    except (OSError, ValueError):
        pass
    return int(folder.name[5:]) if folder.name.startswith("iter_") and folder.name[5:].isdigit() else None


def evaluation_at(run_dir: Path, checkpoint: Path) -> dict[str, float] | None:
    """The evaluation the trainer wrote (``metrics.json``) at the checkpoint's iteration, else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        iteration = int(checkpoint.name.removeprefix("iter_"))
    except (OSError, ValueError):
        return None
    return metrics if int(metrics.get("iter", -1)) == iteration else None


def seed_from_earlier(run_dir: Path, earlier: dict[str, Any]) -> Path:
    """Start a continued trial's run folder from an earlier result: its metrics history, evaluations and the
    checkpoint it trains on from (copied, so the earlier result stays as it was)."""
    import shutil

    source, ckpt = Path(earlier["run_dir"]), Path(earlier["checkpoint"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "metrics.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, run_dir / name)
    if (source / "eval").is_dir():
        shutil.copytree(source / "eval", run_dir / "eval", dirs_exist_ok=True)
    target = run_dir / "checkpoints" / ckpt.name
    if not target.is_dir():
        tmp = target.with_name(f".tmp_{ckpt.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ckpt, tmp)
        os.replace(tmp, target)
    (run_dir / "continued_from.json").write_text(json.dumps(earlier) + "\n")
    return target


def write_identity(run_dir: Path, identity: dict[str, Any], *, name: str, tracking: dict[str, Any]) -> None:
    """``run_dir/identity.json``: the content key and, per attempt, when and where it started (``status`` reads
    the start time; the reuse index reads the key)."""
    import socket
    import time

    from more.harness.identity import IDENTITY_FILE

    if not identity:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / IDENTITY_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    attempts = previous.get("attempts", []) + [{"started": time.time(), "host": socket.gethostname(),
                                                 "node_ip": _node_ip(), "pid": os.getpid()}]
    data = {**identity, "trial": name, "spec_hash": tracking.get("spec_hash", ""), "attempts": attempts}
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _node_ip() -> str:
    """The Ray node this attempt runs on (hosts of a cluster may share a name; loopback nodes always do), or ""
    outside Ray."""
    import sys

    if "ray" not in sys.modules:
        return ""
    try:
        import ray

        return ray.util.get_node_ip_address() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 -- a detail of the record, never a reason to fail a trial
        return ""


FAULT_ENV = "MORE_FAULT_KILL_AFTER_CKPT"


def inject_fault(run_dir: Path, iteration: int) -> None:
    """Fault injection for the retry tests: with ``$MORE_FAULT_KILL_AFTER_CKPT=N`` the trial's process SIGKILLs
    itself once (per run folder) after writing its iteration-N checkpoint and tracking it, before Tune records it."""
    import signal

    wanted = os.environ.get(FAULT_ENV)
    marker = run_dir / ".fault_injected"
    if not wanted or int(wanted) != iteration or marker.exists():
        return
    marker.write_text(str(iteration))
    os.kill(os.getpid(), signal.SIGKILL)
