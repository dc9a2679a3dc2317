"""Tracking latency per call kind, measured from the benchmark's side: every call a process makes through an
``MlflowClient`` (the trial trackers' senders, the driver's launch run and reconciliation) is timed and appended to
``<folder>/calls-<role>-<pid>.jsonl`` as ``{"call": name, "s": seconds, "ok": bool}``.

The wrapper only measures: it calls the original method with the same arguments and re-raises what it raises, so
tracking behaves as without it. A call made inside another timed call (e.g. a method that calls a sibling) is not
counted twice: only the outermost one is recorded.

Importing this module installs the timing when ``$MORE_BENCH_CALLS_DIR`` is set (the Ray nodes of ``bench_scale.py``
carry it), as role ``$MORE_BENCH_CALLS_ROLE`` (default ``trial``; the benchmark's launch process says ``driver``): a
trial process imports it while unpickling the light trainer, before the trial's tracker makes its first call.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

CALLS_ENV = "MORE_BENCH_CALLS_DIR"
ROLE_ENV = "MORE_BENCH_CALLS_ROLE"
TIMED = ("create_run", "search_runs", "get_run", "log_batch", "log_artifact", "log_artifacts", "set_terminated",
         "set_tag", "delete_tag", "log_param", "log_metric", "update_run", "get_experiment", "get_experiment_by_name",
         "create_experiment", "search_experiments", "get_metric_history", "set_experiment_tag")
_state: dict[str, Any] = {}
_local = threading.local()


def install(folder: str | os.PathLike, *, role: str) -> bool:
    """Wrap the :data:`TIMED` methods of ``mlflow.MlflowClient`` in this process (once; later calls do nothing).
    Returns whether this call installed them."""
    if _state:
        return False
    from mlflow import MlflowClient

    path = Path(folder) / f"calls-{role}-{os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    _state.update(path=path, lock=threading.Lock(), fh=None)
    for name in TIMED:
        original = getattr(MlflowClient, name, None)
        if original is not None:
            setattr(MlflowClient, name, _timed(name, original))
    return True


def install_from_env() -> bool:
    """:func:`install` into ``$MORE_BENCH_CALLS_DIR`` as ``$MORE_BENCH_CALLS_ROLE`` when the folder is set."""
    folder = os.environ.get(CALLS_ENV)
    return install(folder, role=os.environ.get(ROLE_ENV) or "trial") if folder else False


def _timed(name: str, original: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        start = time.perf_counter()
        ok = False
        try:
            out = original(*args, **kwargs)
            ok = True
            return out
        finally:
            _local.depth = depth
            if depth == 0:
                _note(name, time.perf_counter() - start, ok)

    call.__name__ = name
    call.__wrapped__ = original
    return call


def _note(name: str, seconds: float, ok: bool) -> None:
    with _state["lock"]:
        if _state["fh"] is None:
            _state["fh"] = _state["path"].open("a", buffering=1)  # line-buffered: a killed process loses no line
        _state["fh"].write(json.dumps({"call": name, "s": round(seconds, 6), "ok": ok}) + "\n")


def read_calls(folder: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    """``{role: {call: [seconds of each successful call]}}`` from every file in ``folder``; failed calls are listed
    under ``<call> (failed)``."""
    out: dict[str, dict[str, list[float]]] = {}
    for path in sorted(Path(folder).glob("calls-*.jsonl")):
        role = path.name.split("-")[1]
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
            key = row["call"] if row["ok"] else f"{row['call']} (failed)"
            out.setdefault(role, {}).setdefault(key, []).append(float(row["s"]))
    return out


install_from_env()
