"""``infer`` fanned out over Ray (``more.harness.infer_fanout``): on a two-node loopback cluster (``--address``) and on
the embedded local Ray (``--net-workers 2``), the outputs are the bytes the in-process run writes.

The cluster has one CPU per node and the network worker holds one of them, so every CRF task of the cluster run
can only have run on the other node: the run finishing at all shows the CRF fanning out across nodes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from loopback_cluster import PYTHON, marked_pids, process_env
from tiny_config import TINY

from more.__main__ import main

pytestmark = [pytest.mark.slow]
ARGS = ["--no-tracking", "--task", "masks", "--split", "train"]
FOLDERS = ("seeds", "masks", "maps")


@pytest.fixture(scope="module")
def ckpt_and_reference(tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    """A random-init vit_micro checkpoint of the tiny recipe and its in-process ``masks`` inference."""
    import torch

    from more.config import load_config
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("fanout")
    cfg = load_config("synthetic", [*TINY, f"data.root={tiny_root}", "runtime.device=cpu", "eval.batch_size=3"])
    torch.manual_seed(1)
    model = build_model(cfg)
    ckpt = save_checkpoint(folder / "run", iteration=5, model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                           data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)
    reference = folder / "reference"
    assert main(["infer", str(ckpt), *ARGS, "--workers", "1", "--out", str(reference)]) == 0
    return ckpt, reference


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_like_reference(out: Path, reference: Path) -> None:
    for name in FOLDERS:
        assert digest(out / name) == digest(reference / name), name
    assert json.loads((out / "metrics.json").read_text())["outputs"] == \
        json.loads((reference / "metrics.json").read_text())["outputs"]


@pytest.mark.cluster
def test_infer_on_a_loopback_cluster_writes_the_in_process_bytes(loopback_cluster, ckpt_and_reference, tmp_path):
    ckpt, reference = ckpt_and_reference
    out = tmp_path / "cluster"
    done = subprocess.run([PYTHON, "-m", "more", "infer", str(ckpt), *ARGS, "--out", str(out), "--address",
                           loopback_cluster.address], env=loopback_cluster.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 CPU network worker(s) and 1 CRF slot(s)" in done.stderr
    assert "infer masks 16/16 (100.0%)" in done.stderr  # the progress lines with their ETA
    assert_like_reference(out, reference)
    assert all(n["NodeManagerAddress"].startswith("127.") for n in loopback_cluster.nodes())


def test_infer_on_the_embedded_ray_with_two_network_workers(ckpt_and_reference, proc_root, tmp_path):
    ckpt, reference = ckpt_and_reference
    out = tmp_path / "local"
    done = subprocess.run([PYTHON, "-m", "more", "infer", str(ckpt), *ARGS, "--out", str(out), "--net-workers", "2",
                           "--workers", "1"], env=process_env(proc_root), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 CPU network worker(s) and 1 CRF slot(s) on Ray at 127.0.0.2:" in done.stderr
    assert_like_reference(out, reference)
    deadline = time.monotonic() + 20
    while marked_pids(str(proc_root)) and time.monotonic() < deadline:  # the embedded Ray stopped itself
        time.sleep(0.5)
    assert marked_pids(str(proc_root)) == []
