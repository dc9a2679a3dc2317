"""A real training search: Ray Tune + OptunaSearch on the embedded loopback Ray, 2 trials at a time, ASHA pruning,
the define-by-run constraint in every trial, and --resume continuing the study."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from conftest import TINY  # noqa: E402


def write_spec(path: Path, data_root: Path, *, trials: int) -> Path:
    overrides = dict(item.split("=", 1) for item in TINY)
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    overrides.update({"data.root": str(data_root), "train.max_iters": 6, "train.eval_every": 2, "train.ckpt_every": 2})
    body = {
        "name": "train_tiny", "kind": "training", "experiment": {"config": "synthetic", "overrides": overrides},
        "space": {"pseudo.par_bg_low": {"type": "float", "low": 0.1, "high": 0.4},
                  "pseudo.par_bg_high": {"type": "float", "low": 0.3, "high": 0.9},
                  "lir.cre_weight": {"type": "float", "low": 0.01, "high": 20.0, "log": True}},
        "constraints": ["pseudo.par_bg_low + 0.05 < pseudo.par_bg_high"],
        # train/loss moves with cre_weight at once, so the rung comparisons are never ties
        # seed 28: TPE's first four (random start-up) draws give cre_weight 0.026, 0.486, 14.2, 16.0, so trials 2
        # and 3 reach the first rung with a far worse loss than both earlier trials whatever the arrival order, and
        # ASHA must stop them (with seed 0 the outcome depended on which trial reached the rung first)
        "metric": "train/loss", "mode": "min", "trials": trials, "seed": 28, "max_concurrent": 2,
        "resources": {"cpus": 1, "gpus": 0},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2, "max_t": 6},
    }
    path.write_text(yaml.safe_dump({"search": body}))
    return path


def run_search(tmp: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp / "home"), TMPDIR=str(tmp))
    (tmp / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "more", "search", *argv], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_training_search_runs_two_at_a_time_prunes_and_resumes(tiny_root):
    tmp = Path(tempfile.mkdtemp(prefix="ms-", dir="/tmp"))  # short: Ray's socket paths
    try:
        check_search(tmp, tiny_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_search(tmp: Path, tiny_root: Path) -> None:
    spec, out = write_spec(tmp / "spec.yaml", tiny_root, trials=4), tmp / "out"
    common = [str(spec), "--out", str(out), "--tracking-uri", str(tmp / "mlflow")]
    done = run_search(tmp, *common)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (out / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert all(r["state"] == "COMPLETE" for r in rows)
    for r in rows:  # the constraint held in every trial
        assert float(r["pseudo.par_bg_low"]) + 0.05 < float(r["pseudo.par_bg_high"])
    spans = json.loads((out / "run_00_trials.json").read_text())
    # ASHA stopped at least one trial before its 6 iterations
    assert sum(s["stopped_early"] for s in spans.values()) >= 1, spans
    assert all(s["iterations"] in (2, 4, 6) for s in spans.values())
    # real concurrency: some trial started before another one ended
    ordered = sorted(spans.values(), key=lambda s: s["start"])
    assert any(b["start"] < a["end"] for a, b in zip(ordered, ordered[1:])), ordered
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["preset"] == "synthetic" and "lir.cre_weight" in best

    resumed = run_search(tmp, *common, "--resume", "--trials", "2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    with (out / "trials.csv").open() as fh:
        assert [int(r["trial"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3, 4, 5]
    assert set(json.loads((out / "run_01_trials.json").read_text())) == {"4", "5"}
