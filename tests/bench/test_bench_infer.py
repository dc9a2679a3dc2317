"""``bench/bench_infer.py`` still runs and prints its three tables (no figure is checked: speed lives in bench/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_infer_bench_prints_rates_sizes_and_the_accuracy_of_compact_maps(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["--images", "6", "--size", "48", "--classes", "3", "--accuracy-images", "3", "--skip-ray", "--workers", "1",
            "--work", str(tmp_path), "model.variant=vit_micro", "eval.resize=48", "eval.crf_workers=1"]
    proc = subprocess.run([sys.executable, "bench/bench_infer.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| network pass (seeds) | in-process, 1 thread |" in out
    assert "| DenseCRF | process pool, 1 worker(s) |" in out
    assert "| maps, uint8 (as written, all 6 images) |" in out and "| seed PNG |" in out
    for row in ("seeds from uint8 maps", "masks from uint8 maps", "seeds from float16 maps", "masks from float16 maps"):
        assert f"| {row} |" in out, row
