"""Benchmark: what one evaluation's tracking costs the training thread, without training around it.

A trial tracker (as the harness opens it, pictures off) on a fresh sqlite store receives ``--evals`` evaluations of
VOC's size: 21 classes x 5 outputs of per-class IoU and confusion plus the means (~250 values), with the
``metrics.jsonl`` records of 200 iterations at ``train.log_every`` 20 written before each (10 records of 10 values).
It prints the time each ``report`` call kept the caller (p50, p90, max), the end of the run (``finish``) and, for a
tracker with a background sender, the sender's own time. With ``--dead-server`` the store is an address where nothing
listens: the time a report costs when the server is gone.

The script uses only the tracker API that both the synchronous tracker (before issue 21) and the outbox tracker
have, so the same file measures either version: ``PYTHONPATH=<checkout> python bench/bench_tracking_calls.py``.

Usage: ``python bench/bench_tracking_calls.py [--evals 40] [--dead-server]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

OUTPUTS = ("cam", "aux_cam", "lam", "fused", "seg")


def evaluation(step: int, classes: list[str]) -> dict[str, float]:
    metrics = {"iter": float(step), "time/eval_sec": 12.5, "val/cls_f1": 0.5 + step * 1e-6}
    for out in OUTPUTS:
        for q in ("miou", "precision", "recall", "confusion"):
            metrics[f"val/{out}/{q}"] = 40.0 + step * 1e-4
        for name in classes:
            metrics[f"val/{out}/iou/{name}"] = 30.0 + step * 1e-4
            metrics[f"val/{out}/confusion/{name}"] = 0.7
    return metrics


def write_records(run_dir: Path, first: int, last: int, every: int = 20) -> None:
    with (run_dir / "metrics.jsonl").open("a") as fh:
        for i in range(first + every, last + 1, every):
            fh.write(json.dumps({"iter": i, "train/loss": 1.0 / i, **{f"train/term{j}": 0.1 * j for j in range(7)},
                                 "train/lr": 1e-4}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--dead-server", action="store_true")
    args = parser.parse_args()

    from more.config import load_config
    from more.data.classes import class_names
    from more.tracking import LaunchTracker, TrialTracker, trial_key
    from more.tracking.store import free_port, make_client

    work = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        cfg = load_config("voc", [f"data.root={work / 'voc'}"])
        classes = class_names(cfg)  # 21: the per-class tables are written as for a VOC trial
        uri = f"sqlite:///{work / 'mlflow.db'}"
        make_client(uri).search_experiments()  # migrations, outside the measurement
        launch = LaunchTracker.start(uri, "bench_calls", "000000000000", "", "bench", strict=True)
        parent = launch.run_id
        kwargs = {}
        if args.dead_server:
            uri, parent = f"http://127.0.0.1:{free_port()}", "f" * 32
            kwargs = {"open_wait_s": 1.0, "finish_wait_s": 0.0}
        run_dir = work / "run"
        run_dir.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            try:
                trial = TrialTracker.open(uri, parent, trial_key("000000000000", "calls"), {"more.kind": "trial"}, cfg,
                                          run_dir=run_dir, pictures=False, **kwargs)
            except TypeError:  # the tracker before issue 21 has no open_wait_s / finish_wait_s
                trial = TrialTracker.open(uri, parent, trial_key("000000000000", "calls"), {"more.kind": "trial"},
                                          cfg, run_dir=run_dir, pictures=False)
            opened = time.perf_counter() - t0
            report = trial.report_callback()
            calls = []
            for n in range(1, args.evals + 1):
                write_records(run_dir, (n - 1) * 200, n * 200)
                t0 = time.perf_counter()
                report(evaluation(n * 200, classes), None)
                calls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trial.finish("FINISHED")
            finish = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    calls.sort()
    p90 = calls[min(len(calls) - 1, int(0.9 * len(calls)))]
    values = len(evaluation(200, classes)) + 10 * 10
    print(f"{args.evals} evaluations of ~{values} values each, pictures off, "
          f"{'a dead server' if args.dead_server else 'sqlite'}; tracker {TrialTracker.__module__}")
    print(f"  open                        {opened * 1000:9.1f} ms")
    print(f"  report call, training thread p50 {statistics.median(calls) * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms, "
          f"max {calls[-1] * 1000:7.1f} ms")
    print(f"  finish                      {finish * 1000:9.1f} ms")
    sender = getattr(trial, "sender_s", None)
    if sender is not None:
        print(f"  background sender           {sender * 1000:9.1f} ms in all ({sender / args.evals * 1000:.1f} ms per "
              f"evaluation, off the training thread)")
    print(f"  run holds iteration {getattr(trial, 'logged_through', '?')}")


if __name__ == "__main__":
    main()
