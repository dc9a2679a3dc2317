"""The benchmark scripts still run (no figure is checked here: speed lives in bench/, never in timed tests).

Each script runs as a user would run it, on the tiny configuration, and must print its table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tiny_config import TINY

REPO = Path(__file__).resolve().parents[2]


def run_script(*args: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_step_bench_prints_the_summary_and_a_breakdown_with_every_loss():
    out = run_script("bench/bench_train_step.py", "--threads", "1", "--iters", "1", "--warmup", "1", *TINY)
    assert "| eager |" in out and "Breakdown (eager" in out
    for phase in ("cam pass", "PAR refinement", "backward", "optimizer step", "loss: cre", "loss: ure", "loss: energy"):
        assert f"| {phase} |" in out, phase


def test_validation_bench_times_each_batch_size():
    out = run_script("bench/bench_validation.py", "--threads", "1", "--images", "6", "--batch", "1,3", *TINY)
    assert "| 1 |" in out and "| 3 |" in out and "1.00x" in out


def test_losses_bench_compares_every_hot_spot_with_its_loop():
    out = run_script("bench/bench_losses.py", "--repeat", "1", "--energy-batch", "0", "--energy-loop-grid", "8")
    entries = [line.split("  ")[0] for line in out.splitlines()]
    for entry in ("L_ure", "L_cre", "L_cre all rows", "L_ure fwd+bwd", "L_cre fwd+bwd", "PTC mask", "bilateral 8x8"):
        assert entry in entries, entry


def test_par_bench_compares_both_channel_modes_with_the_loop():
    out = run_script("bench/bench_par.py", "--threads", "1", "--size", "64", "--batch", "2", "--repeats", "1")
    assert "reference loop" in out and "multi_scale_cam without the model" in out
    for mode in ("all", "present"):
        line = next(ln for ln in out.splitlines() if f"channels={mode}" in ln)
        assert "label agreement 100.0000 %" in line, line


def test_harness_bench_gaps_come_from_the_trainers_run_folders(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from bench_harness import scheduling_gaps

    rows = []
    for i, (start, end) in enumerate([(10.0, 20.0), (21.5, 30.0), (30.25, 40.0)]):
        run = tmp_path / f"t{i}" / "run"
        run.mkdir(parents=True)
        for name, stamp in (("config.yaml", start), ("metrics.json", end)):
            (run / name).write_text("{}")
            os.utime(run / name, (stamp, stamp))
        rows.append({"trial": f"t{i}", "status": "TERMINATED", "run_dir": str(run), "metrics": {}})
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text(json.dumps({"trials": rows[::-1]}))
    assert scheduling_gaps(tmp_path) == [1.5, 0.25]


def test_read_paths_bench_fills_a_store_and_times_every_read(tmp_path):
    out = run_script("bench/bench_read_paths.py", "--other", "4", "--experiments", "2", "--repeat", "1",
                     "--log-lines", "10", "--out", str(tmp_path / "b"))
    rows = {line.split(" | ")[0].strip("| `"): line for line in out.splitlines() if line.startswith("| `")}
    assert sorted(rows) == ["ablate --dry-run", "report", "report --checkpoint best:val", "status"], out
    assert all(line.rstrip().endswith("| 0 |") for line in rows.values()), out  # every command exited 0
    assert "15 trials in the spec" in out
    dry = (tmp_path / "b" / "ablate-0.log").read_text()
    assert "5 to run, 15 reused" in dry  # the spec grown by a seed: its 15 trials that ran are reused
    report = (tmp_path / "b" / "report-0.log").read_text()
    assert "15 trials from MLflow" in report


def test_light_harness_gaps_and_memory_growth_come_from_run_folders_and_samples(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from bench_harness_light import _quantile, _rss_growth

    samples = tmp_path / "rss.csv"
    samples.write_text("seconds,trials_done,rss_mb\n0.25,0,900.0\n0.5,1,1000.0\n0.75,3,1002.0\n1.0,5,1004.0\n"
                       "1.25,5,1030.0\n")  # the launch's end-of-run work after the last trial is not counted
    assert _rss_growth(samples) == (1000.0, 1004.0, 4)  # 4 MB over the 4 trials after the first
    assert _quantile([0.1, 0.2, 0.3, 5.0], 0.5) == 0.3 and _quantile([0.1, 0.2, 0.3, 5.0], 0.99) == 5.0
