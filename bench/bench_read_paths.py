"""Read paths against a store with history: ``ablate --dry-run`` (reuse planning), ``report`` and ``status`` of a spec
whose trials ran, in an MLflow store (and a storage folder) that also holds many other trial runs.

The store is filled directly (no training): ``--other`` trial runs of other specs spread over ``--experiments``
experiments, each with the tags, ~130 params (a real flat config) and ~60 metrics per evaluation that a tracked
trial has, plus the spec's own trials (5 Table 3 conditions x ``--values`` sweep values x ``--seeds`` seeds) with
their real content keys, a launch run, metrics at every evaluation, and their experiment folder (plan, run folders
with identity, metrics and outcome) for ``status``. ``--other-folders`` run folders of other experiments go into
the storage too (what a reuse lookup could have to scan).

The dry run is of the spec grown by one seed (its earlier trials reused, the new ones looked up: a launch's usual
planning); ``report`` and ``status`` read the spec that ran. Each command runs as the user runs it (``python -m more
...``), timed end to end with its peak memory (RSS).
``--code DIR`` runs the commands from another checkout (e.g. an older commit unpacked with ``git archive``), so the
same filled store measures before and after a change. ``--tracking-uri`` fills and reads another store (e.g.
``postgresql+psycopg://...`` or an ``http://`` server; ``--workers`` fills it with several threads); the default is a
sqlite file under ``--out``.

Usage: python bench/bench_read_paths.py [--other 3000] [--values 1] [--seeds 3] [--out work/bench_read_paths]
       [--reuse-store] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from light_trainer import evaluation_metrics as evaluation  # noqa: E402 -- ~60 metrics named as the trainer's

CONDITIONS = {"baseline": {"lir.cre_weight": 0.0, "lir.ure_weight": 0.0, "gcr.enabled": False},
              "wo_cre": {"lir.cre_weight": 0.0}, "wo_ure": {"lir.ure_weight": 0.0}, "wo_gcr": {"gcr.enabled": False},
              "more": {}}
EVALS = (25, 50, 75, 100)  # the iterations each trial evaluated at
CODE = "benchcode"


def write_spec(out: Path, values: int, seeds: int, *, file: str = "bench_read.yaml") -> Path:
    """The spec: Table 3's conditions, a sweep of ``values`` energy weights, ``seeds`` seeds, synthetic data."""
    spec = {
        "name": "bench_read", "experiment": {"config": "synthetic", "overrides": {
            "data.root": str(out / "data"), "train.max_iters": EVALS[-1], "train.eval_every": EVALS[0]}},
        "conditions": CONDITIONS, "seeds": list(range(seeds)),
        "resources": {"cpus": 1, "gpus": 0}, "metric": "val/seg/miou", "mode": "max",
    }
    if values > 1:
        spec["sweeps"] = {"loss.energy_weight": [round(0.01 * (i + 1), 4) for i in range(values)]}
    path = out / file
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def log_run(client: Any, exp_id: str, name: str, tags: dict[str, str], params: dict[str, str],
            history: dict[int, dict[str, float]]) -> str:
    from mlflow.entities import Metric, Param, RunTag

    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for step, values in history.items() for k, v in values.items()]
    items = [Param(k, v) for k, v in params.items()]
    param_parts = [items[i:i + 100] for i in range(0, len(items), 100)]
    metric_parts = [metrics[i:i + 900] for i in range(0, len(metrics), 900)]  # MLflow: <= 1000 values a batch
    for i in range(max(len(param_parts), len(metric_parts))):
        client.log_batch(run_id, params=param_parts[i] if i < len(param_parts) else [],
                         metrics=metric_parts[i] if i < len(metric_parts) else [],
                         tags=[RunTag("more.logged_through", str(EVALS[-1]))] if i == 0 else [])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def fill(uri: str, spec_path: Path, storage: Path, *, other: int, experiments: int, other_folders: int,
         workers: int, log_lines: int) -> None:
    """Write the other runs, the spec's runs and the experiment folders (see the module docstring)."""
    os.environ["MORE_CODE_ID"] = CODE
    from mlflow.tracking import MlflowClient

    from more.config.load import to_flat
    from more.data.classes import class_names
    from more.harness.identity import spec_identities
    from more.harness.reuse import RUN, Decision, plan_json
    from more.harness.spec import expand, load_spec, spec_hash, trial_config
    from more.tracking import trial_key

    spec = load_spec(spec_path)
    trials = expand(spec)
    digest = spec_hash(spec, trials)
    identities = spec_identities(spec, trials, code=CODE)
    client = MlflowClient(tracking_uri=uri)
    base_cfg = trial_config(spec, trials[0])
    classes = class_names(base_cfg)
    base_params = {k: str(v) for k, v in to_flat(base_cfg).items()}
    rng = random.Random(0)

    def other_run(i: int) -> None:
        r = random.Random(i)
        exp_id = other_exps[i % experiments]
        params = {**base_params, "train.seed": str(i % 3), "loss.energy_weight": str(r.uniform(0, 1))}
        tags = {"more.kind": "trial", "more.content_key": f"{r.getrandbits(64):016x}",
                "more.config_key": f"{r.getrandbits(64):016x}", "more.code_id": "othercode",
                "more.spec_name": f"other_{i % experiments}", "more.spec_hash": f"{i % experiments:012x}",
                "more.trial_key": f"{i % experiments:012x}:t{i}", "more.condition": "more", "more.seed": str(i % 3),
                "more.sweep": "{}", "mlflow.parentRunId": parents[i % experiments],
                "more.run_dir": f"/nonexistent/other/t{i}/run", "more.experiment_folder": f"other_{i % experiments}"}
        log_run(client, exp_id, f"t{i}", tags, params, {it: evaluation(r, classes, it) for it in EVALS})

    started = time.perf_counter()
    other_exps = [client.create_experiment(f"other_{e}") for e in range(experiments)]
    parents = [client.create_run(x, tags={"more.kind": "launch"}).info.run_id for x in other_exps]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(other_run, range(other)), 1):
            if done % 500 == 0 or done == other:
                rate = done / (time.perf_counter() - started)
                print(f"  other trial runs: {done}/{other} ({rate:.0f}/s, ETA {(other - done) / rate:.0f} s)",
                      flush=True)
    exp_id = client.create_experiment(spec.name)
    parent = client.create_run(exp_id, run_name=f"{spec.name}-{digest}", tags={
        "more.kind": "launch", "more.spec_name": spec.name, "more.spec_hash": digest}).info.run_id
    folder = storage / f"{spec.name}-{digest}"
    for t in trials:
        ident = identities[t.name]
        history = {it: evaluation(rng, classes, it) for it in EVALS}
        run_dir = folder / t.name / "run"
        tags = {"more.kind": "trial", "more.trial_key": trial_key(digest, t.name), "more.condition": t.condition,
                "more.seed": str(t.seed), "more.spec_name": spec.name, "more.spec_hash": digest,
                "more.sweep": json.dumps(t.sweep, sort_keys=True), "mlflow.parentRunId": parent,
                "more.content_key": ident.key, "more.config_key": ident.config_key, "more.code_id": ident.code,
                "more.run_dir": str(run_dir), "more.experiment_folder": folder.name}
        params = {k: str(v) for k, v in to_flat(trial_config(spec, t)).items()}
        run_id = log_run(client, exp_id, t.name, tags, params, history)
        run_dir.mkdir(parents=True)
        (run_dir / "identity.json").write_text(json.dumps({**ident.as_dict(), "trial": t.name, "spec_hash": digest,
                                                           "attempts": [{"started": time.time() - 600}]}))
        records = [{"iter": i, "train/loss": 1.0 / i, "time/sec_per_iter": 0.5} for i in range(1, log_lines + 1)]
        records += [{k: v for k, v in h.items() if "/iou/" not in k and "/confusion/" not in k}
                    for h in history.values()]  # training records, then the evaluations (a long run's file)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (run_dir / "outcome.json").write_text(json.dumps({"status": "FINISHED", "iterations": EVALS[-1],
                                                          "metrics": history[EVALS[-1]], "run_id": run_id,
                                                          "finished": time.time()}))
    (folder / "spec_hash").write_text(digest + "\n")
    (folder / "spec.yaml").write_text(spec_path.read_text())
    (folder / "plan.json").write_text(plan_json([Decision(t.name, RUN, None, "no earlier result") for t in trials],
                                                identities))
    for i in range(other_folders):
        run_dir = storage / f"other_{i % experiments}-{i % experiments:012x}" / f"t{i}" / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "identity.json").write_text(json.dumps({"key": f"{i:016x}", "config_key": f"{i:016x}",
                                                           "code": "othercode", "target_iters": EVALS[-1]}))
        (run_dir / "outcome.json").write_text(json.dumps({"status": "FINISHED", "iterations": EVALS[-1],
                                                          "metrics": {"val/seg/miou": 50.0}}))
    print(f"filled in {time.perf_counter() - started:.0f} s: {other} other trial runs in {experiments} experiments, "
          f"{len(trials)} trials of {spec.name} (hash {digest}), {other_folders} other run folders", flush=True)


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit status of one command (its output goes to ``log``). It runs in the
    folder of ``log``: ``python -m`` puts its working directory first on the path, so ``--code`` takes effect."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=int, default=3000, help="trial runs of other specs in the store")
    parser.add_argument("--experiments", type=int, default=10, help="experiments the other runs are spread over")
    parser.add_argument("--other-folders", type=int, default=None, help="run folders of other experiments in the "
                                                                        "storage (default: --other)")
    parser.add_argument("--values", type=int, default=1, help="sweep values: the spec has 5 x values x seeds trials")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--log-lines", type=int, default=2000, help="training records in each trial's metrics.jsonl "
                                                                    "(20,000 iterations logged every 10: 2,000)")
    parser.add_argument("--tracking-uri", help="the store to fill and read (default: a sqlite file under --out)")
    parser.add_argument("--workers", type=int, default=1, help="threads filling the store (1 for sqlite)")
    parser.add_argument("--out", default=str(ROOT / "work" / "bench_read_paths"))
    parser.add_argument("--reuse-store", action="store_true", help="time against the store --out already holds")
    parser.add_argument("--code", help="run the commands from this checkout (PYTHONPATH), e.g. an older commit")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each command (the first dry run may build "
                                                              "the storage's reuse index)")
    parser.add_argument("--fill-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    uri = args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    storage = out / "storage"
    if args.fill_only:
        fill(uri, out / "bench_read.yaml", storage, other=args.other, experiments=args.experiments,
             other_folders=args.other if args.other_folders is None else args.other_folders, workers=args.workers,
             log_lines=args.log_lines)
        return
    if not args.reuse_store:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        write_spec(out, args.values, args.seeds)
        write_spec(out, args.values, args.seeds + 1, file="bench_read_grown.yaml")
        # in a child process: this one stays small, so its forked commands' peak RSS is their own
        subprocess.run([sys.executable, __file__, "--fill-only", *sys.argv[1:]], check=True, cwd=ROOT)
    spec_path = out / "bench_read.yaml"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env.update(MORE_CODE_ID=CODE, PYTHONUNBUFFERED="1")
    if args.code:
        env["PYTHONPATH"] = str(Path(args.code).resolve())
    more = [sys.executable, "-m", "more"]
    where = ["--storage", str(storage)]
    commands = {
        "ablate --dry-run": [*more, "ablate", str(out / "bench_read_grown.yaml"), "--dry-run", *where,
                             "--tracking-uri", uri],
        "report": [*more, "report", str(spec_path), *where, "--tracking-uri", uri, "--no-log", "--out",
                   str(out / "report")],
        "report --checkpoint best:val": [*more, "report", str(spec_path), *where, "--tracking-uri", uri, "--no-log",
                                         "--out", str(out / "report_best"), "--checkpoint", "best:val"],
        "status": [*more, "status", str(spec_path), *where],
    }
    rows = []
    for name, command in commands.items():
        for i in range(args.repeat):
            wall, rss, code = timed(command, env, out / f"{name.split()[0]}-{i}.log")
            rows.append((name, i + 1, wall, rss, code))
            print(f"{name} (run {i + 1}): {wall:.1f} s, peak RSS {rss:.0f} MB, exit {code}", flush=True)
    n_trials = sum(1 for _ in (storage.glob("bench_read-*/*/run")))
    lines = [f"bench_read_paths, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, store {uri.split(':')[0]}, "
             f"{n_trials} trials in the spec, code {args.code or ROOT}, 1-min load average at the end: "
             f"{os.getloadavg()[0]:.2f}", "", "| command | run | wall | peak RSS | exit |", "|---|---|---|---|---|",
             *(f"| `{n}` | {i} | {w:.1f} s | {r:.0f} MB | {c} |" for n, i, w, r, c in rows)]
    text = "\n".join(lines) + "\n"
    (out / "read_paths.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
