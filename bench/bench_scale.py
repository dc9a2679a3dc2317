"""The harness at scale: a grid of N light trials on a loopback Ray cluster (a head and several worker nodes that
declare GPUs they do not have), launched through :func:`more.harness.launch`, tracked into an MLflow server on
PostgreSQL that also holds ``--other`` trial runs of other specs.

In order: PostgreSQL and an MLflow server on it start (artifacts under ``--out``); the store is filled with the other
trial runs (``bench_read_paths``'s payloads, several threads against the server); the Ray cluster starts; a spec of N
trials (one seed each, K evaluations of ``bench/light_trainer.py`` sleeping T s, one picture) is launched in a child
process that samples its own RSS; meanwhile the faults asked for are injected (``--kill-worker-at``: SIGKILL of one
worker node's raylet and processes when that share of the trials is done; ``--stop-mlflow-for``: the MLflow server
stopped at ``--stop-mlflow-at`` and started again on the same port after that many seconds). Afterwards every trial's
run is read back through the MLflow client (lost, duplicated, every step of every metric once), the gaps on each slot
are taken from the run folders, and ``ablate --dry-run`` (of the spec grown by one seed), ``report`` and ``status``
are timed as a user runs them. Everything started is stopped by PID at the end, also on error or Ctrl-C.

Prints and writes ``scale.md`` and ``scale.json`` in ``--out``.

Usage: python bench/bench_scale.py [--trials 100] [--seconds 1] [--evals 3] [--workers 4] [--gpus-per-node 4]
       [--other 10000] [--kill-worker-at 0.3] [--stop-mlflow-for 60] [--out work/bench_scale]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

TARGETS = {"ablate --dry-run": 10, "report": 30, "status": 2}


def write_spec(path: Path, *, name: str, trials: int, evals: int, trial_cpus: float, max_failures: int) -> Path:
    spec = {"name": name, "experiment": {"config": "synthetic", "overrides": {
        "data.root": str(path.parent / "data"), "train.max_iters": evals, "train.eval_every": 1, "eval.num_vis": 0,
        "runtime.device": "cpu"}}, "seeds": list(range(trials)), "resources": {"cpus": trial_cpus, "gpus": 1},
        "metric": "val/seg/miou", "mode": "max", "checkpoints": {"keep": 1}, "max_failures": max_failures}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def launch_child(spec: str, storage: str, uri: str, address: str, seconds: str, samples: str, result: str) -> None:
    """The launch process: times its MLflow calls, samples its RSS against the trials done, launches."""
    import call_timing  # noqa: F401  (installs the call timing: $MORE_BENCH_CALLS_ROLE is "driver" here)
    from light_trainer import RssSampler, light_trainer

    from more.harness import LaunchOptions, launch

    sampler = RssSampler(samples, storage, every=0.5)
    out = launch(spec, storage=storage, tracking_uri=uri, address=address,
                 trainer=functools.partial(light_trainer, seconds=float(seconds), picture=True),
                 options=LaunchOptions())
    sampler.stop()
    Path(result).write_text(json.dumps({"code": out.code, "experiment": out.experiment, "spec_hash": out.spec_hash,
                                        "parent_run_id": out.parent_run_id}))


def fill_other(uri: str, spec_path: Path, *, other: int, experiments: int, threads: int) -> dict[str, Any]:
    """``other`` finished trial runs of other specs (~130 params, 4 evaluations of ~60 metrics, tags as a tracked
    trial has them) in ``experiments`` experiments, written by ``threads`` threads through the server."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from bench_read_paths import EVALS, evaluation, log_run

    from more.config.load import to_flat
    from more.data.classes import class_names
    from more.harness.spec import expand, load_spec, trial_config
    from more.tracking.store import make_client

    if other <= 0:
        return {}
    spec = load_spec(spec_path)
    cfg = trial_config(spec, expand(spec)[0])
    classes, base = class_names(cfg), {k: str(v) for k, v in to_flat(cfg).items()}
    client = make_client(uri)
    exps = [client.create_experiment(f"other_{e}") for e in range(experiments)]
    parents = [client.create_run(x, tags={"more.kind": "launch"}).info.run_id for x in exps]

    def one(i: int) -> None:
        r = random.Random(i)
        e = i % experiments
        tags = {"more.kind": "trial", "more.content_key": f"{r.getrandbits(64):016x}",
                "more.config_key": f"{r.getrandbits(64):016x}", "more.code_id": "othercode",
                "more.spec_name": f"other_{e}", "more.spec_hash": f"{e:012x}", "more.trial_key": f"{e:012x}:t{i}",
                "more.condition": "more", "more.seed": str(i % 3), "more.sweep": "{}",
                "mlflow.parentRunId": parents[e], "more.run_dir": f"/nonexistent/other/t{i}/run",
                "more.experiment_folder": f"other_{e}"}
        params = {**base, "train.seed": str(i % 3), "loss.energy_weight": str(r.uniform(0, 1))}
        log_run(client, exps[e], f"t{i}", tags, params, {it: evaluation(r, classes, it) for it in EVALS})

    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for done, _ in enumerate(pool.map(one, range(other)), 1):
            if done % 500 == 0 or done == other:
                rate = done / (time.perf_counter() - started)
                print(f"  other trial runs: {done}/{other} ({rate:.1f}/s, ETA {(other - done) / rate:.0f} s)",
                      flush=True)
    finally:  # on an error or Ctrl-C the queued runs are dropped, not written before the services stop
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - started
    return {"runs": other, "seconds": seconds, "rate": other / seconds, "threads": threads}


class Faults:
    """Watches the trials done and injects the faults asked for; ``events`` records what happened when."""

    def __init__(self, args: argparse.Namespace, cluster: Any, services: Any, t0: float) -> None:
        self.args, self.cluster, self.services, self.t0 = args, cluster, services, t0
        self.events: list[dict[str, Any]] = []
        self.killed = self.stopped = False
        self.restarter: threading.Thread | None = None

    def _event(self, what: str, note: str) -> None:
        self.events.append({"what": what, "t": time.monotonic() - self.t0, "note": note})
        print(f"  [{time.monotonic() - self.t0:.0f} s] {what}: {note}", flush=True)

    def poll(self, done: int) -> None:
        a = self.args
        if a.kill_worker_at is not None and not self.killed and done >= a.kill_worker_at * a.trials:
            self.killed = True
            pids = self.cluster.kill_worker(0)
            self._event("worker node killed", f"SIGKILL of worker0's raylet and {len(pids) - 1} more processes with "
                                              f"{done} trials done")
        if a.stop_mlflow_for and not self.stopped and done >= a.stop_mlflow_at * a.trials:
            self.stopped = True
            self.services.stop_mlflow()
            self._event("MLflow server stopped", f"with {done} trials done, for {a.stop_mlflow_for:g} s")
            self.restarter = threading.Thread(target=self._restart, daemon=True)
            self.restarter.start()

    def _restart(self) -> None:
        time.sleep(self.args.stop_mlflow_for)
        self.services.start_mlflow()
        self._event("MLflow server started again", f"same port {self.services.port}")

    def describe(self) -> str:
        parts = []
        if self.args.kill_worker_at is not None:
            parts.append(f"worker node killed at {self.args.kill_worker_at:.0%} of trials done")
        if self.args.stop_mlflow_for:
            parts.append(f"MLflow stopped {self.args.stop_mlflow_for:g} s at {self.args.stop_mlflow_at:.0%}")
        return "; ".join(parts)


def run_launch(args: argparse.Namespace, out: Path, spec: Path, cluster: Any, services: Any) -> dict[str, Any]:
    """The launch child, watched: progress lines with an ETA, faults; returns its result and timings."""
    from call_timing import ROLE_ENV

    storage, samples, result = out / "storage", out / "rss.csv", out / "launch_result.json"
    env = {**cluster.env, ROLE_ENV: "driver"}
    command = [sys.executable, str(Path(__file__).resolve()), "--launch-child", str(spec), str(storage),
               services.url, cluster.address, str(args.seconds), str(samples), str(result)]
    t0 = time.monotonic()
    faults = Faults(args, cluster, services, t0)
    with (out / "launch.log").open("w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                 start_new_session=True)
    try:
        last_print = 0.0
        while child.poll() is None:
            time.sleep(0.5)
            done = sum(1 for _ in storage.glob("*/*/run/metrics.json"))
            faults.poll(done)
            now = time.monotonic() - t0
            if now - last_print >= 15:
                last_print = now
                eta = f", ETA {(args.trials - done) * now / done:.0f} s" if done else ""
                print(f"  [{now:.0f} s] trials done {done}/{args.trials}{eta}", flush=True)
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    wall = time.monotonic() - t0
    if faults.restarter is not None:
        faults.restarter.join()
    if not result.is_file():
        raise SystemExit(f"the launch exited with {child.returncode} and no result; see {out / 'launch.log'}")
    return {**json.loads(result.read_text()), "wall_s": wall, "events": faults.events, "faults": faults.describe(),
            "started_at": time.time() - wall}


def read_paths(args: argparse.Namespace, out: Path, spec: Path, uri: str) -> dict[str, tuple[float, float, int]]:
    """``ablate --dry-run`` of the spec grown by one seed, ``report`` and ``status``, as a user runs them."""
    from bench_read_paths import timed

    grown = write_spec(out / "grown.yaml", name=f"scale{args.trials}", trials=args.trials + 1, evals=args.evals,
                       trial_cpus=args.trial_cpus, max_failures=args.max_failures)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    more, where = [sys.executable, "-m", "more"], ["--storage", str(out / "storage")]
    commands = {"ablate --dry-run": [*more, "ablate", str(grown), "--dry-run", *where, "--tracking-uri", uri],
                "report": [*more, "report", str(spec), *where, "--tracking-uri", uri, "--no-log", "--out",
                           str(out / "report")],
                "status": [*more, "status", str(spec), *where]}
    times = {}
    for name, command in commands.items():
        wall, rss, code = timed(command, env, out / f"{name.split()[0]}.log")
        times[name] = (wall, rss, code)
        print(f"  {name}: {wall:.1f} s, peak RSS {rss:.0f} MB, exit {code}", flush=True)
    return times


def prepare_out(path: str) -> Path:
    """The output folder: refused when it holds files this benchmark did not make; an earlier run's is cleared."""
    from more.outputs import OutputError, check_output_dir, own_dir

    out = Path(path).resolve()
    try:
        check_output_dir(out, what="--out")
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if out.is_dir():
        shutil.rmtree(out)
    return own_dir(out, command="bench_scale")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="N: trials in the spec (one seed each)")
    parser.add_argument("--seconds", type=float, default=1.0, help="T: seconds each evaluation sleeps")
    parser.add_argument("--evals", type=int, default=3, help="K: evaluations per trial")
    parser.add_argument("--workers", type=int, default=4, help="worker nodes (besides the head)")
    parser.add_argument("--gpus-per-node", type=int, default=4, help="GPUs each worker node declares (its slots)")
    parser.add_argument("--trial-cpus", type=float, default=1.0, help="CPUs a trial reserves (besides its GPU)")
    parser.add_argument("--max-failures", type=int, default=3, help="the spec's retries per trial")
    parser.add_argument("--other", type=int, default=10000, help="other trial runs in the store")
    parser.add_argument("--other-experiments", type=int, default=10)
    parser.add_argument("--fill-threads", type=int, default=8)
    parser.add_argument("--mlflow-workers", type=int, default=4, help="MLflow server workers")
    parser.add_argument("--kill-worker-at", type=float, help="kill a worker node when this share of trials is done")
    parser.add_argument("--stop-mlflow-for", type=float, default=0, help="stop the MLflow server for this long")
    parser.add_argument("--stop-mlflow-at", type=float, default=0.2, help="... when this share of trials is done")
    parser.add_argument("--out", default=str(ROOT / "work" / "bench_scale"))
    args = parser.parse_args()
    for name in ("trials", "evals", "workers", "gpus_per_node", "mlflow_workers", "fill_threads",
                 "other_experiments"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    for name in ("kill_worker_at", "stop_mlflow_at"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            parser.error(f"--{name.replace('_', '-')} is a share of the trials, 0..1 (got {value})")
    if args.seconds < 0 or args.stop_mlflow_for < 0 or args.other < 0 or args.trial_cpus <= 0:
        parser.error("--seconds, --stop-mlflow-for and --other must be >= 0, --trial-cpus > 0")
    if args.kill_worker_at is not None and args.workers < 2:
        parser.error("--kill-worker-at needs --workers >= 2 (the trials must have a node left to run on)")
    return args


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from call_timing import CALLS_ENV, read_calls
    from scale_cluster import ScaleCluster, Services
    from scale_figures import call_table, check_runs, expected_keys, quantile, rss_by_trials, slot_gaps

    from more.harness.spec import expand, load_spec, spec_hash, trial_config
    from more.privacy import telemetry_env
    from more.tracking import trial_key

    load_before = _load()
    out = prepare_out(args.out)
    name = f"scale{args.trials}"
    spec = write_spec(out / f"{name}.yaml", name=name, trials=args.trials, evals=args.evals,
                      trial_cpus=args.trial_cpus, max_failures=args.max_failures)
    services = cluster = None
    root = Path(__import__("tempfile").mkdtemp(prefix="bs-", dir="/tmp"))  # short: Ray's socket paths
    try:
        print(f"starting PostgreSQL and an MLflow server ({args.mlflow_workers} workers) ...", flush=True)
        services = Services(out, workers=args.mlflow_workers)
        print(f"  {services.url} on {services.backend.split('?')[0]}", flush=True)
        print(f"filling the store with {args.other} other trial runs ({args.fill_threads} threads) ...", flush=True)
        fill = fill_other(services.url, spec, other=args.other, experiments=args.other_experiments,
                          threads=args.fill_threads)
        print(f"starting Ray: a head and {args.workers} worker nodes x {args.gpus_per_node} GPUs ...", flush=True)
        cluster = ScaleCluster(root, secrets.token_hex(32), workers=args.workers, gpus=args.gpus_per_node,
                               extra_env={CALLS_ENV: str(out / "calls"), **telemetry_env()}, logs=out / "ray-logs")
        cluster.start()
        print(f"  {cluster.address}, {cluster.slots} slots; launching {args.trials} trials ...", flush=True)
        launched = run_launch(args, out, spec, cluster, services)
        print(f"launch exited {launched['code']} after {launched['wall_s']:.1f} s; checking MLflow ...", flush=True)
        cluster.stop()
        cluster = None
        loaded = load_spec(spec)
        trials = expand(loaded)
        digest = spec_hash(loaded, trials)
        check = check_runs(services.url, loaded.name, [trial_key(digest, t.name) for t in trials],
                           expected_keys(trial_config(loaded, trials[0])), args.evals)
        print("timing the read paths ...", flush=True)
        times = read_paths(args, out, spec, services.url)
    finally:
        if cluster is not None:
            cluster.stop()
        if services is not None:
            services.stop()
    shutil.rmtree(root, ignore_errors=True)  # kept after an error: Ray's own logs are in it
    run_dirs = [p.parent for p in (Path(launched["experiment"])).glob("*/run/config.yaml")]
    starts = [(d / "config.yaml").stat().st_mtime for d in run_dirs]
    ends = [(d / "metrics.json").stat().st_mtime for d in run_dirs if (d / "metrics.json").is_file()]
    gaps, gap_slots = slot_gaps(run_dirs)
    retried = sorted(d.parent.name for d in run_dirs if len(_attempts(d)) > 1)
    slots = args.workers * args.gpus_per_node
    ideal = -(-args.trials // slots) * args.seconds * args.evals
    grid = max(ends) - min(starts) if starts and ends else float("nan")
    fig = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load_before, "load_after": _load(),
           "machine": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} "
                      f"GiB, shared", "trials": args.trials, "evals": args.evals, "seconds": args.seconds,
           "slots": slots, "workers": args.workers, "gpus_per_node": args.gpus_per_node,
           "trial_cpus": args.trial_cpus, "mlflow_workers": args.mlflow_workers, "other": args.other,
           "faults": launched["faults"], "events": launched["events"], "launch_code": launched["code"],
           "launch_wall_s": launched["wall_s"], "grid_s": grid, "ideal_s": ideal,
           "before_s": min(starts) - launched["started_at"] if starts else float("nan"),
           "plan_s": (Path(launched["experiment"]) / "plan.json").stat().st_mtime - launched["started_at"],
           "after_s": launched["started_at"] + launched["wall_s"] - max(ends) if ends else float("nan"),
           "gaps": len(gaps), "gap_slots": gap_slots, "gap_p50": quantile(gaps, 0.5), "gap_p99": quantile(gaps, 0.99),
           "gap_max": max(gaps, default=float("nan")), "rss": rss_by_trials(out / "rss.csv", args.trials),
           "retried": retried, "check": check, "read_paths": times, "targets": TARGETS, "fill": fill,
           "calls": call_table(read_calls(out / "calls"))}
    return fig


def _attempts(run_dir: Path) -> list[Any]:
    try:
        return json.loads((run_dir / "identity.json").read_text()).get("attempts", [])
    except (OSError, json.JSONDecodeError):
        return []


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--launch-child":
        launch_child(*sys.argv[2:9])
        return
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from scale_figures import markdown

    fig = bench(args)
    out = Path(args.out).resolve()
    text = markdown(fig)
    (out / "scale.md").write_text(text)
    (out / "scale.json").write_text(json.dumps(fig, indent=1, default=str))
    print()
    print(text)
    c = fig["check"]
    complete = not (c["lost"] or c["duplicated"] or c["incomplete"] or c["values_missing"] or c["values_twice"])
    print("every trial has exactly one run with every evaluation once" if complete else
          "RUNS LOST, DUPLICATED OR INCOMPLETE: see scale.json's check")
    sys.exit(0 if complete and fig["launch_code"] == 0 else 1)


if __name__ == "__main__":
    main()
