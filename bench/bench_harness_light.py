"""``bench_harness.py --light``: the harness's own costs, around a trainer that sleeps (``bench/light_trainer.py``).

Two launches, each a fresh Python process calling :func:`more.harness.launch` (embedded loopback Ray, MLflow into a
private sqlite store created beforehand, so its one-off migrations are timed apart):

1. one light trial alone: the **fixed cost of a launch** = the process's wall time minus the trial's own time
   (Tune's ``time_total_s``);
2. N light trials one at a time: the **gap** on the slot (one trial's ``metrics.json`` written at its last
   evaluation -> the next trial's ``config.yaml`` written as it starts, as ``bench_harness.py`` measures real
   trials), p50 / p99 / max, and the **driver's memory** (RSS sampled in the driver) against the trials done.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _spec(folder: Path, name: str, trials: int) -> Path:
    spec = {"name": name, "experiment": {"config": "synthetic", "overrides": {
        "data.root": str(folder / "data"), "train.max_iters": 1, "train.eval_every": 1, "eval.num_vis": 0}},
            "seeds": list(range(trials)), "resources": {"cpus": 1, "gpus": 0}, "max_concurrent": 1,
            "metric": "val/seg/miou", "mode": "max", "checkpoints": {"keep": 1}, "max_failures": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def light_launch(argv: list[str]) -> None:
    """The child process: ``SPEC STORAGE TRACKING_URI SECONDS SAMPLES_CSV [PROFILE]``; launch and sample the RSS."""
    import functools

    sys.path.insert(0, str(Path(__file__).parent))
    from light_trainer import RssSampler, light_trainer

    from more.harness import LaunchOptions, launch

    spec, storage, uri, seconds, samples = argv[:5]
    profile = argv[5] if len(argv) > 5 else ""
    sampler = RssSampler(samples, storage, every=0.25)
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    result = launch(spec, storage=storage, tracking_uri=uri, trainer=functools.partial(light_trainer, seconds=float(
        seconds)), options=LaunchOptions(rerun=True), say=lambda _: None)
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    sampler.stop()
    print(json.dumps({"code": result.code, "experiment": result.experiment}))


def _run_launch(folder: Path, spec: Path, seconds: float, profile: bool, code: str | None) -> tuple[float, dict]:
    """Wall seconds of one light launch process and its rows (results.json); ``code``: the checkout it runs."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, str(Path(__file__).with_name("bench_harness.py")), "--light-launch", str(spec),
               str(folder / "storage"), uri, str(seconds), str(folder / "rss.csv")]
    if profile:
        command.append(str(folder / "profile.txt"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    if code:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(code).resolve()), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    with (folder / "launch.log").open("w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"light launch exited with {code}; see {folder / 'launch.log'}")
    (results,) = (folder / "storage").glob("*/results.json")
    return wall, json.loads(results.read_text())


def _new_store(folder: Path) -> float:
    """Create the launch's MLflow store in a separate process (its migrations), timed."""
    code = f"from mlflow.tracking import MlflowClient; MlflowClient('sqlite:///{folder / 'mlflow.db'}')" \
           f".search_experiments()"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def _gaps(results: dict) -> list[float]:
    spans = []
    for row in results["trials"]:
        run_dir = Path(row["run_dir"])
        spans.append(((run_dir / "config.yaml").stat().st_mtime_ns, (run_dir / "metrics.json").stat().st_mtime_ns))
    spans.sort()
    return [(later[0] - earlier[1]) / 1e9 for earlier, later in zip(spans, spans[1:])]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _rss_growth(samples: Path) -> tuple[float, float, int]:
    """RSS when the first trial was done, when the last one was (before the launch's end-of-run work), and the trials
    done in between."""
    rows = [line.split(",") for line in samples.read_text().splitlines()[1:] if line.count(",") == 2]
    done = [(int(d), float(r)) for _, d, r in rows]
    started = [r for d, r in done if d >= 1]
    if not started:
        return float("nan"), float("nan"), 0
    final = max(d for d, _ in done)
    last = next(r for d, r in done if d == final)
    return started[0], last, final - 1


def light_bench(out: Path, *, trials: int, seconds: float, profile: bool, code: str | None = None) -> None:
    rows = []
    one = out / "light_one"
    one.mkdir(parents=True, exist_ok=True)
    for old in (one / "storage", one / "mlflow.db"):
        subprocess.run(["rm", "-rf", str(old)], check=True)
    store_s = _new_store(one)
    wall, results = _run_launch(one, _spec(one, "light_one", 1), seconds, profile, code)
    trial_s = float(results["trials"][0]["metrics"]["time_total_s"])
    rows += [("MLflow store creation (migrations, once per store)", f"{store_s:.1f} s", "not in the launch below"),
             ("one light trial: launch process end to end", f"{wall:.1f} s", f"trial {trial_s:.1f} s (Tune)"),
             ("**fixed cost of a launch**", f"**{wall - trial_s:.1f} s**", "target <= 8 s")]
    many = out / "light_many"
    many.mkdir(parents=True, exist_ok=True)
    for old in (many / "storage", many / "mlflow.db"):
        subprocess.run(["rm", "-rf", str(old)], check=True)
    _new_store(many)
    wall, results = _run_launch(many, _spec(many, "light_many", trials), seconds, profile, code)
    gaps = _gaps(results)
    first, last, between = _rss_growth(many / "rss.csv")
    per_1000 = (last - first) / between * 1000 if between else float("nan")
    rows += [(f"{trials} light trials one at a time: end to end", f"{wall:.1f} s", f"{seconds:g} s of sleep each"),
             ("**gap between trials on a slot**", f"**p50 {_quantile(gaps, 0.5):.2f} s, p99 "
              f"{_quantile(gaps, 0.99):.2f} s**", f"mean {statistics.fmean(gaps):.2f} s, max {max(gaps):.2f} s; "
                                                  f"target p50 <= 0.3 s, p99 <= 2 s"),
             ("**driver memory growth**", f"**{per_1000:.0f} MB per 1,000 trials**",
              f"RSS {first:.0f} MB after the first trial, {last:.0f} MB after {between} more; target <= 200 MB")]
    lines = [f"bench_harness --light, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, code "
             f"{code or ROOT}, 1-min load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| figure | value | note |", "|---|---|---|",
             *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    text = "\n".join(lines) + "\n"
    (out / "light.md").write_text(text)
    print(text)
    if profile:
        print(f"driver profiles: {one / 'profile.txt'}, {many / 'profile.txt'}")
