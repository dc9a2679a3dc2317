"""The figures of ``bench_scale.py``, computed after a launch: runs lost / duplicated / incomplete (read back through
the MLflow client), the gap on each slot, the driver's memory against trials done, tracking latency per call kind,
and the Markdown table they are printed as."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def expected_keys(cfg: Any) -> list[str]:
    """Every metric key one light-trainer evaluation logs (its metrics, plus the tracker's ``time/tracking_sec``)."""
    import random

    from light_trainer import evaluation_metrics

    from more.data.classes import class_names

    return sorted([*evaluation_metrics(random.Random(0), class_names(cfg), 1), "time/tracking_sec"])


def check_runs(uri: str, experiment: str, trial_keys: list[str], keys: list[str], evals: int,
               *, pictures: bool = True) -> dict[str, Any]:
    """Compare the spec's trials with their MLflow runs: one run per trial key (lost: none; duplicated: more than
    one), every key at every step 1..``evals`` exactly once (incomplete: a step missing or logged twice), FINISHED,
    and the last evaluation's picture among the artifacts."""
    from more.report.mlflow_reader import metric_histories
    from more.tracking.store import make_client

    client = make_client(uri)
    exp = client.get_experiment_by_name(experiment)
    runs: list[Any] = []
    token = None
    while exp is not None:
        page = client.search_runs([exp.experiment_id], "tags.`more.kind` = 'trial'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    by_key: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        by_key[run.data.tags.get("more.trial_key", "")].append(run)
    lost = [k for k in trial_keys if not by_key.get(k)]
    duplicated = {k: len(v) for k, v in by_key.items() if len(v) > 1}
    strangers = [k for k in by_key if k not in set(trial_keys)]
    ids = [r.info.run_id for r in runs]
    missing: Counter[str] = Counter()  # run id -> (key, step) pairs missing
    twice: Counter[str] = Counter()
    wanted = set(range(1, evals + 1))
    for key in keys:
        for run_id, history in metric_histories(client, ids, key).items():
            steps = Counter(int(m.step) for m in history)
            missing[run_id] += len(wanted - set(steps))
            twice[run_id] += sum(n - 1 for s, n in steps.items() if n > 1)
    incomplete = {r.info.run_id: {"trial_key": r.data.tags.get("more.trial_key"), "missing": missing[r.info.run_id],
                                  "twice": twice[r.info.run_id]}
                  for r in runs if missing[r.info.run_id] or twice[r.info.run_id]}
    status = Counter(r.info.status for r in runs)
    no_picture = []
    if pictures:
        name = f"pictures/iter_{evals:06d}.png"
        for run in runs:
            if name not in {f.path for f in client.list_artifacts(run.info.run_id, "pictures")}:
                no_picture.append(run.data.tags.get("more.trial_key"))
    return {"trials": len(trial_keys), "runs": len(runs), "lost": lost, "duplicated": duplicated,
            "strangers": strangers, "incomplete": incomplete, "metric_keys": len(keys), "evaluations": evals,
            "values_expected": len(trial_keys) * len(keys) * evals,
            "values_missing": sum(missing.values()), "values_twice": sum(twice.values()),
            "status": dict(status), "no_picture": no_picture if pictures else None}


def slot_gaps(run_dirs: list[Path]) -> tuple[list[float], int]:
    """The gaps on each slot (one trial's ``metrics.json``, written at its last evaluation -> the next trial's
    ``config.yaml``, written as it starts, on the same Ray node and GPU) and the number of slots seen."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for run_dir in run_dirs:
        try:
            where = json.loads((run_dir / "light_slot.json").read_text())
            span = ((run_dir / "config.yaml").stat().st_mtime_ns, (run_dir / "metrics.json").stat().st_mtime_ns)
        except (OSError, json.JSONDecodeError):
            continue
        spans[f"{where.get('node')}/{','.join(where.get('gpus', []))}"].append(span)
    gaps = []
    for slot in spans.values():
        slot.sort()
        gaps += [(later[0] - earlier[1]) / 1e9 for earlier, later in zip(slot, slot[1:])]
    return gaps, len(spans)


def rss_by_trials(samples: Path, total: int) -> dict[str, Any]:
    """The driver's RSS when 1, 25 %, 50 %, 75 % and all trials were done, and its growth per 1,000 trials between
    the first trial done and the last (the launch's end-of-run work excluded)."""
    rows = []
    for line in samples.read_text().splitlines()[1:]:
        parts = line.split(",")
        if len(parts) == 3:
            rows.append((float(parts[0]), int(parts[1]), float(parts[2])))
    points = {}
    for mark in (1, total // 4, total // 2, 3 * total // 4, total):
        at = next((r for r in rows if r[1] >= max(mark, 1)), None)
        if at is not None:
            points[max(mark, 1)] = at[2]
    first, last = points.get(1), points.get(total)
    growth = (last - first) / (total - 1) * 1000 if first is not None and last is not None and total > 1 else None
    return {"rss_mb_at_trials_done": points, "growth_mb_per_1000": growth,
            "peak_mb": max((r[2] for r in rows), default=None)}


def call_table(calls: dict[str, dict[str, list[float]]]) -> list[tuple[str, str, int, float, float, float]]:
    """(role, call, count, p50 ms, p99 ms, max ms), most frequent first within each role."""
    out = []
    for role in sorted(calls):
        for call, values in sorted(calls[role].items(), key=lambda kv: -len(kv[1])):
            out.append((role, call, len(values), 1000 * quantile(values, 0.5), 1000 * quantile(values, 0.99),
                        1000 * max(values)))
    return out


def markdown(fig: dict[str, Any]) -> str:
    """The report of one bench_scale run."""
    t, c = fig["targets"], fig["check"]
    lines = [f"bench_scale, {fig['date']}, {fig['machine']}, load average {fig['load_before']} before / "
             f"{fig['load_after']} after", "",
             f"N = {fig['trials']} trials x {fig['evals']} evaluations x {fig['seconds']:g} s on {fig['slots']} slots "
             f"({fig['workers']} worker nodes x {fig['gpus_per_node']} declared GPUs, trial reserves 1 GPU + "
             f"{fig['trial_cpus']:g} CPU); MLflow server ({fig['mlflow_workers']} workers) on PostgreSQL 15 holding "
             f"{fig['other']} other trial runs; faults: {fig['faults'] or 'none'}", "",
             "| figure | value | target / note |", "|---|---|---|"]
    rows = [
        ("launch (process, end to end)", f"{fig['launch_wall_s']:.1f} s", f"exit {fig['launch_code']}"),
        ("grid (first trial start -> last trial end)", f"{fig['grid_s']:.1f} s",
         f"ideal N*T*K/slots = {fig['ideal_s']:.1f} s ({fig['grid_s'] / fig['ideal_s']:.2f}x)"),
        ("before the first trial starts", f"{fig['before_s']:.1f} s",
         f"{fig['plan_s']:.1f} s to plan.json (imports, checks, reuse plan, Ray join), then Tune start, the first "
         f"trial processes' start and their tracker opening; with 'after': the fixed cost, target <= 8 s"),
        ("after the last trial (Tune end, reconcile, publish)", f"{fig['after_s']:.1f} s",
         f"fixed cost {fig['before_s'] + fig['after_s']:.1f} s"),
        ("gap on a slot", f"p50 {fig['gap_p50']:.2f} s, p99 {fig['gap_p99']:.2f} s",
         f"{fig['gaps']} gaps on {fig['gap_slots']} slots, max {fig['gap_max']:.2f} s; target p50 <= 0.3 s, "
         f"p99 <= 2 s"),
        ("driver RSS growth", _fmt(fig["rss"]["growth_mb_per_1000"], "MB per 1,000 trials"),
         f"RSS (MB) at trials done: {fig['rss']['rss_mb_at_trials_done']}; target <= 200 MB per 1,000"),
        ("MLflow runs: lost / duplicated / other", f"{len(c['lost'])} / {len(c['duplicated'])} / "
         f"{len(c['strangers'])}", f"{c['runs']} runs for {c['trials']} trials; status {c['status']}"),
        ("evaluations: values missing / logged twice", f"{c['values_missing']} / {c['values_twice']}",
         f"of {c['values_expected']} ({c['metric_keys']} keys x {c['evaluations']} steps x {c['trials']} trials); "
         f"incomplete runs: {len(c['incomplete'])}"),
        ("trials that ran more than once (Tune's retries)", str(len(fig["retried"])),
         ", ".join(fig["retried"][:20]) + (" ..." if len(fig["retried"]) > 20 else "")),
        ("runs without the last picture", str(len(c["no_picture"] or [])) if c["no_picture"] is not None else "-",
         "pictures/iter_K.png among each run's artifacts"),
    ]
    for name, (wall, rss, code) in fig["read_paths"].items():
        rows.append((f"`{name}`", f"{wall:.1f} s", f"peak RSS {rss:.0f} MB, exit {code}; target <= {t[name]} s"))
    if fig.get("fill"):
        rows.append(("filling the store with other trial runs", f"{fig['fill']['seconds']:.0f} s",
                     f"{fig['fill']['runs']} runs, {fig['fill']['rate']:.1f} runs/s with {fig['fill']['threads']} "
                     f"threads"))
    for event in fig["events"]:
        rows.append((f"fault: {event['what']}", f"at {event['t']:.0f} s", event["note"]))
    lines += [f"| {a} | {b} | {n} |" for a, b, n in rows]
    lines += ["", "Tracking calls (timed around each `MlflowClient` call, from the caller's side):", "",
              "| process | call | count | p50 | p99 | max |", "|---|---|---|---|---|---|"]
    lines += [f"| {r} | {k} | {n} | {p50:.0f} ms | {p99:.0f} ms | {mx:.0f} ms |"
              for r, k, n, p50, p99, mx in fig["calls"]]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f} {unit}"
