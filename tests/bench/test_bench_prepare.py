"""bench/bench_prepare.py still runs and prints its table (no figure is checked: speed lives in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_prepare_bench_prints_every_row():
    proc = subprocess.run([sys.executable, "bench/bench_prepare.py", "--images", "10", "--instances", "2",
                           "--workers", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| VOC + SBD | folders | 10 |", "| VOC + SBD | tar + tgz | 10 |", "| VOC + SBD | second run (verify",
                "| COCO 2014 (2 polygons/image) | folders | 10 |"):
        assert row in proc.stdout, row
