"""Harness overheads, measured through the user's own commands (``python -m more ablate`` and ``report``).

Three launches of the same synthetic trial (vit_tiny, ``--iters`` iterations, one thread per trial), each a fresh
local Ray with MLflow tracking into a private sqlite store:

1. **one trial alone**: end-to-end wall time of ``ablate`` against the trial's own time (Tune's ``time_total_s``);
   the difference is the fixed cost of a launch (Ray start, spec checks, tracking, scheduling, results). ``report``
   is timed on the same store.
2. **N equal trials on N slots** (seeds 0..N-1, ``max_concurrent`` N, one CPU each): fan-out efficiency = the
   slowest of the N trials against the lone trial of launch 1 (target <= 1.2x), and the wall-time ratio of the two
   launches.
3. **K short trials one at a time** (``--short-iters`` iterations each): the per-trial scheduling overhead = the
   mean gap between one trial's training ending and the next one's starting (from the trainer's run folders).

The data set is generated before the first launch, so that no launch pays for it. Everything is written under
``--out`` (default ``work/bench_harness``), including ``harness.md`` with the table printed at the end.

``--light`` measures the harness alone instead: each launch goes through :func:`more.harness.launch` in a fresh
Python process (as ``ablate`` does), with the real trial adapter, tracking and Tune around ``bench/light_trainer.py``
(it sleeps instead of training): the fixed cost of a launch of one trial, the gap between trials on one slot over
``--light-trials`` trials (p50, p99), and the driver's memory against the trials done. ``--profile`` also writes a
pyinstrument profile of each light launch's driver (pyinstrument on PYTHONPATH; not a project dependency).

Usage: python bench/bench_harness.py [--iters 60] [--trials 2] [--short-trials 6] [--short-iters 2]
       python bench/bench_harness.py --light [--light-trials 60] [--light-seconds 0.2] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def spec_text(name: str, iters: int, seeds: list[int], concurrent: int) -> str:
    every = max(1, iters)
    spec = {
        "name": name,
        "description": f"bench_harness: {len(seeds)} equal synthetic trials of {iters} iterations",
        "experiment": {
            "config": str(ROOT / "experiments" / "synthetic.yaml"),
            "overrides": {"train.max_iters": iters, "train.eval_every": every, "train.ckpt_every": every,
                          "optim.warmup_iters": max(1, iters // 10), "loss.seg_start": iters // 4,
                          "pseudo.mask_switch_iter": iters // 2, "runtime.num_threads": 1},
        },
        "seeds": seeds,
        "resources": {"cpus": 1, "gpus": 0},
        "max_concurrent": concurrent,
        "metric": "val/seg/miou",
        "mode": "max",
        "checkpoints": {"keep": 1},
        "max_failures": 0,
    }
    return yaml.safe_dump(spec, sort_keys=False)


def run(command: list[str], log: Path) -> float:
    """Wall seconds of one command; its output goes to ``log``; a failure stops the bench and names the log."""
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.call(command, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{' '.join(command)} exited with {code}; see {log}")
    return wall


def finished_rows(storage: Path) -> list[dict]:
    """The trial rows of the one experiment under ``storage``; stops the bench unless every trial finished."""
    results = sorted(storage.glob("*/results.json"))
    if len(results) != 1:
        sys.exit(f"expected one results.json under {storage}, found {len(results)}")
    rows = json.loads(results[0].read_text())["trials"]
    bad = [r["trial"] for r in rows if r["status"] != "TERMINATED"]
    if bad:
        sys.exit(f"trials did not finish: {bad} (see {results[0]})")
    return rows


def trial_times(storage: Path) -> list[float]:
    """Tune's ``time_total_s`` of every trial (the trial function's own time, worker set-up included)."""
    return [float(r["metrics"]["time_total_s"]) for r in finished_rows(storage)]


def scheduling_gaps(storage: Path) -> list[float]:
    """Seconds between one trial's end and the next one's start, for trials run one at a time.

    The trainer writes ``config.yaml`` first thing and ``metrics.json`` at its last evaluation, so the gap covers
    Tune's bookkeeping, result and checkpoint handling, scheduling the next trial and opening its tracking run.
    """
    spans = []
    for row in finished_rows(storage):
        run_dir = Path(row["run_dir"])
        spans.append(((run_dir / "config.yaml").stat().st_mtime, (run_dir / "metrics.json").stat().st_mtime))
    spans.sort()
    return [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:])]


def launch(out: Path, name: str, iters: int, seeds: list[int], concurrent: int, *, report: bool = False
           ) -> tuple[float, list[float], float | None]:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = folder / "spec.yaml"
    spec.write_text(spec_text(name, iters, seeds, concurrent))
    tracking = ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    storage = folder / "ray"
    print(f"[{name}] ablate: {len(seeds)} trial(s) of {iters} iterations, {concurrent} at a time ...", flush=True)
    wall = run([sys.executable, "-m", "more", "ablate", str(spec), "--storage", str(storage), *tracking],
               folder / "ablate.log")
    times = trial_times(storage)
    print(f"[{name}] {wall:.1f} s end to end; trials {', '.join(f'{t:.1f}' for t in times)} s", flush=True)
    report_wall = None
    if report:
        report_wall = run([sys.executable, "-m", "more", "report", str(spec), "--storage", str(storage),
                           "--out", str(folder / "report"), *tracking], folder / "report.log")
        print(f"[{name}] report: {report_wall:.1f} s", flush=True)
    return wall, times, report_wall


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--light-launch":
        from bench_harness_light import light_launch

        light_launch(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60, help="iterations of each equal trial (launches 1 and 2)")
    parser.add_argument("--trials", type=int, default=2, help="N: equal trials on N slots (launch 2)")
    parser.add_argument("--short-trials", type=int, default=6, help="K: short trials one at a time (launch 3)")
    parser.add_argument("--short-iters", type=int, default=2, help="iterations of each short trial")
    parser.add_argument("--out", default=str(ROOT / "work" / "bench_harness"), help="output folder")
    parser.add_argument("--light", action="store_true", help="the harness alone, around a trainer that sleeps")
    parser.add_argument("--light-trials", type=int, default=60, help="trials one at a time (--light)")
    parser.add_argument("--light-seconds", type=float, default=0.2, help="each light trial's length (--light)")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles of the light launches")
    parser.add_argument("--code", help="run the light launches from this checkout (PYTHONPATH), e.g. an older commit")
    args = parser.parse_args()
    if args.light:
        from bench_harness_light import light_bench

        light_bench(Path(args.out).resolve(), trials=args.light_trials, seconds=args.light_seconds,
                    profile=args.profile, code=args.code)
        return
    if args.short_trials < 2 or args.trials < 1 or args.iters < 1 or args.short_iters < 1:
        parser.error("--short-trials must be at least 2 (it measures gaps between trials); the others at least 1")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from more.config import load_config
    from more.data import ensure_dataset

    print("synthetic data set ...", flush=True)
    ensure_dataset(load_config(str(ROOT / "experiments" / "synthetic.yaml")))

    one_wall, (one_time,), report_wall = launch(out, "one", args.iters, [0], 1, report=True)
    (lone,) = finished_rows(out / "one" / "ray")
    records = [json.loads(line) for line in (Path(lone["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    speed = [r for r in records if "time/images_per_sec" in r][-1]  # the trainer's last training record
    sec_per_iter, images_per_sec = speed["time/sec_per_iter"], speed["time/images_per_sec"]
    fan_wall, fan_times, _ = launch(out, "fanout", args.iters, list(range(args.trials)), args.trials)
    short_wall, short_times, _ = launch(out, "short", args.short_iters, list(range(args.short_trials)), 1)
    gaps = scheduling_gaps(out / "short" / "ray")

    fixed = one_wall - one_time
    rows = [
        ("one trial alone: trial time", f"{one_time:.1f} s", f"{args.iters} iterations"),
        ("one trial alone: training speed", f"{sec_per_iter:.3f} s/iter, {images_per_sec:.1f} images/s",
         "the trainer's own figure over its last logging window (one thread; evaluation excluded)"),
        ("one trial alone: ablate end to end", f"{one_wall:.1f} s", ""),
        ("fixed cost of a launch", f"{fixed:.1f} s", "Ray start, checks, tracking, scheduling, results"),
        ("report", f"{report_wall:.1f} s", "Table + CSV/MD/TeX/PNG from the MLflow store"),
        (f"{args.trials} equal trials on {args.trials} slots: trial times",
         ", ".join(f"{t:.1f}" for t in fan_times) + " s", ""),
        ("fan-out efficiency (slowest / alone)", f"{max(fan_times) / one_time:.2f}x", "target <= 1.2x"),
        ("fan-out, end to end (launch 2 / launch 1)", f"{fan_wall / one_wall:.2f}x", ""),
        (f"{args.short_trials} short trials one at a time: end to end", f"{short_wall:.1f} s",
         f"{args.short_iters} iterations each; trials {sum(short_times):.1f} s in all"),
        ("per-trial scheduling overhead", f"{sum(gaps) / len(gaps):.2f} s",
         f"mean gap from one trial's end to the next one's start (range {min(gaps):.2f}-{max(gaps):.2f} s)"),
    ]
    import torch

    lines = [
        f"bench_harness, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"1-min load average at the end: {os.getloadavg()[0]:.2f}",
        "",
        "| figure | value | note |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    text = "\n".join(lines) + "\n"
    tmp = out / "harness.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "harness.md")
    print()
    print(text)


if __name__ == "__main__":
    main()
