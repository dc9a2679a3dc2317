"""``bench/bench_scale.py`` runs end to end at N = 4 on loopback (PostgreSQL, an MLflow server on it, a Ray head and
two worker nodes declaring GPUs), finds every run complete, reports its figures, and leaves no process behind; its
bad arguments are refused before anything starts. No figure is checked: speed lives in bench/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "tests" / "harness"))  # last: its light_trainer.py must not shadow anything

from loopback_cluster import marked_pids  # noqa: E402


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "bench/bench_scale.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_scale_bench_runs_a_tiny_grid_with_every_run_complete(postgres, tmp_path):
    # `postgres` only decides the skip, as for the suite's other PostgreSQL tests; the script starts its own server
    out = tmp_path / "scale"
    proc = run("--trials", "4", "--evals", "2", "--seconds", "0.2", "--workers", "2", "--gpus-per-node", "2",
               "--other", "6", "--fill-threads", "2", "--mlflow-workers", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every trial has exactly one run with every evaluation once" in proc.stdout
    fig = json.loads((out / "scale.json").read_text())
    check = fig["check"]
    assert (check["runs"], check["lost"], check["duplicated"], check["incomplete"]) == (4, [], {}, {})
    assert check["values_expected"] == 4 * check["metric_keys"] * 2 and check["values_missing"] == 0
    assert check["no_picture"] == [] and check["status"] == {"FINISHED": 4}
    assert fig["slots"] == 4 and fig["fill"]["runs"] == 6
    calls = {(role, call) for role, call, *_ in fig["calls"]}
    assert {("trial", "create_run"), ("trial", "log_batch"), ("driver", "create_run")} <= calls
    assert set(fig["read_paths"]) == {"ablate --dry-run", "report", "status"}
    assert all(code == 0 for _, _, code in fig["read_paths"].values())
    text = (out / "scale.md").read_text()
    assert "| MLflow runs: lost / duplicated / other | 0 / 0 / 0 |" in text
    assert marked_pids(str(out)) == []  # every process that carried the bench's folder is gone


@pytest.mark.parametrize("args, names", [
    (["--kill-worker-at", "1.5"], "--kill-worker-at"),
    (["--stop-mlflow-at", "-0.1"], "--stop-mlflow-at"),
    (["--trials", "0"], "--trials"),
    (["--workers", "0"], "--workers"),
    (["--gpus-per-node", "0"], "--gpus-per-node"),
    (["--evals", "0"], "--evals"),
    (["--seconds", "-1"], "--seconds"),
    (["--other", "-5"], "--other"),
    (["--trial-cpus", "0"], "--trial-cpus"),
    (["--kill-worker-at", "0.5", "--workers", "1"], "--kill-worker-at"),
])
def test_scale_bench_refuses_bad_arguments_before_starting_anything(args, names, tmp_path):
    proc = run(*args, "--out", str(tmp_path / "never"), timeout=120)
    assert proc.returncode == 2 and names in proc.stderr, proc.stderr
    assert not (tmp_path / "never").exists()


def test_scale_bench_refuses_an_out_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    proc = run("--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and str(tmp_path) in proc.stderr and "error:" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
