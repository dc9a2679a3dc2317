"""bench/bench_energy.py still runs (no figure is checked: speed lives in bench/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_energy_prints_the_lattice_row():
    command = [sys.executable, "bench/bench_energy.py", "--variants", "lattice", "--batch", "1", "--repeat", "1"]
    proc = subprocess.run([*command, "--threads", "1"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("lattice")]
    assert len(rows) == 1 and rows[0][1] == "1" and float(rows[0][2]) > 0


def test_bench_energy_rejects_unknown_variants():
    proc = subprocess.run([sys.executable, "bench/bench_energy.py", "--variants", "gauss"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown ['gauss']" in proc.stderr
