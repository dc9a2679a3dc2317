"""``infer`` fanned out over Ray (``more.harness.infer_fanout``): on a two-node loopback cluster (``--address``) and on
the embedded local Ray (``--net-workers 2``), the outputs are the bytes the in-process run writes.

The cluster has one CPU per node and the network worker holds one of them, so every CRF task of the cluster run
can only have run on the other node: the run finishing at all shows the CRF fanning out across nodes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from loopback_cluster import PYTHON, LoopbackCluster, descendants, marked_pids, process_env, short_dir
from tiny_config import TINY

from more.__main__ import main

pytestmark = [pytest.mark.slow]
ARGS = ["--no-tracking", "--task", "masks", "--split", "train"]
FOLDERS = ("seeds", "masks", "maps")


def checkpoint_and_reference(folder: Path, *overrides: str) -> tuple[Path, Path]:
    """A random-init vit_micro checkpoint of the tiny recipe with ``overrides`` in ``folder``, and its in-process
    ``masks`` inference."""
    import torch

    from more.config import load_config
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint

    cfg = load_config("synthetic", [*TINY, *overrides, "runtime.device=cpu", "eval.batch_size=3"])
    torch.manual_seed(1)
    model = build_model(cfg)
    ckpt = save_checkpoint(folder / "run", iteration=5, model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                           data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)
    reference = folder / "reference"
    assert main(["infer", str(ckpt), *ARGS, "--workers", "1", "--out", str(reference)]) == 0
    return ckpt, reference


@pytest.fixture(scope="module")
def ckpt_and_reference(tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    """The checkpoint over the tiny set's 16 train images and its in-process ``masks`` inference."""
    return checkpoint_and_reference(tmp_path_factory.mktemp("fanout"), f"data.root={tiny_root}")


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


def finished_images(out: Path) -> int:
    """Images ``infer`` has recorded in ``out`` with both their seeds and their masks (``done.jsonl`` has a line per
    image and output)."""
    done = out / "done.jsonl"
    outputs: dict[str, set[str]] = {}
    for line in done.read_text().splitlines() if done.is_file() else []:
        if line.strip():
            record = json.loads(line)
            outputs.setdefault(record["name"], set()).add(record["output"])
    return sum(1 for found in outputs.values() if {"seeds", "masks"} <= found)


def network_workers(pids: list[int], title: bytes = b"ray::NetWorker.batch") -> list[int]:
    """Those of ``pids`` that run a network worker whose process title starts with ``title`` (Ray titles an actor's
    process ``ray::NetWorker.__init__`` while it is built, ``ray::NetWorker.batch`` while it runs a call, and
    ``ray::NetWorker`` in between): by default, those in the middle of a call."""
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if name.startswith(title):
            found.append(pid)
    return found


@pytest.fixture(scope="module")
def longer_run(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint over a 96-image train split and its in-process ``masks`` inference: long enough (seconds) for a
    network worker to be killed in the middle of it."""
    from more.config import load_config
    from more.data import ensure_dataset

    folder = tmp_path_factory.mktemp("longer")
    data = [f"data.root={folder / 'data'}", "data.synth_train=96"]
    ensure_dataset(load_config("synthetic", [*TINY, *data]), progress=lambda *_: None)
    return checkpoint_and_reference(folder, *data)


def test_a_network_worker_killed_mid_run_is_replaced_and_the_run_ends_with_the_in_process_bytes(
        longer_run, proc_root, tmp_path):
    """A network worker's process is SIGKILLed (by PID) while it runs a batch: the driver replaces it, runs its
    lost batches again, and the outputs are still the bytes of the in-process run."""
    import os
    import signal

    ckpt, reference = longer_run
    out = tmp_path / "killed"
    log = (tmp_path / "infer.log").open("w")
    proc = subprocess.Popen([PYTHON, "-m", "more", "infer", str(ckpt), *ARGS, "--out", str(out), "--net-workers", "2",
                             "--workers", "1"], env=process_env(proc_root), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (victims := network_workers(marked_pids(str(proc_root)))):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "infer.log").read_text()[-3000:]
            time.sleep(0.02)
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "infer.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "infer.log").read_text()
    assert re.search(r"infer: network worker [12] lost \(ActorDiedError\); its batches run again \(1 of 4 losses one "
                     r"run replaces\)", text), text[-3000:]
    assert "2 CPU network worker(s)" in text and "96 images (96 this run)" in text, text[-3000:]
    assert_like_reference(out, reference)


@pytest.mark.cluster
def test_a_node_lost_mid_run_takes_a_network_worker_and_crf_inputs_and_the_run_ends_with_the_in_process_bytes(
        longer_run, tmp_path):
    """A loopback cluster of a head without CPUs and two worker nodes of two CPUs runs two network workers and two CRF
    slots, every object of 1 kB or more in the nodes' object stores (so CRF inputs live on the node that made them);
    the node of a network worker in the middle of a batch is SIGKILLed whole (raylet first). The driver runs the lost
    batches and CRF inputs again with a worker where the node left has room (one worker and one CRF task on its two
    CPUs), counts what the node's death brings in steps as one loss, and the outputs are still the bytes of the
    in-process run."""
    ckpt, reference = longer_run
    root = short_dir("mn-")
    cluster = LoopbackCluster(root, secrets.token_hex(16), workers=2, cpus_per_node=2, head_cpus=0,
                              extra_env={"RAY_max_direct_call_object_size": "1024"})
    out, log_path = tmp_path / "node", tmp_path / "infer.log"
    proc = None
    try:
        cluster.start()
        with log_path.open("w") as log:
            proc = subprocess.Popen([PYTHON, "-m", "more", "infer", str(ckpt), *ARGS, "--out", str(out), "--address",
                                     cluster.address, "--net-workers", "2"], env=cluster.env, stdout=log,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not (hosts := [i for i in range(2) if network_workers(descendants(cluster.procs[f"worker{i}"].pid))]):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.02)
        cluster.kill_worker(hosts[0])
        assert proc.wait(timeout=400) == 0, log_path.read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = log_path.read_text()
    assert "2 CPU network worker(s) and 2 CRF slot(s)" in text, text[-3000:]
    assert re.search(r"infer: network worker [12] lost \(\w+\); its batches run again \(1 of 4 losses", text), \
        text[-3000:]
    assert "2 of 4 losses" not in text, text[-3000:]  # the replacement placed there, the CRF inputs: part of loss 1
    assert "96 images (96 this run)" in text, text[-3000:]
    assert_like_reference(out, reference)


@pytest.mark.cluster
def test_a_run_whose_every_node_is_lost_stops_with_one_line_and_the_same_command_finishes_it_once_a_node_is_back(
        longer_run, tmp_path):
    """The only worker node (the head has no CPU) is SIGKILLed while its network worker runs a batch: with nothing
    able to run for ``MORE_INFER_STALL_S`` (5 s here), ``infer`` stops with one line (exit 2) and keeps what it
    finished; once a node is back, the same command finishes the rest, and the outputs are the in-process bytes."""
    ckpt, reference = longer_run
    root = short_dir("ms-")
    cluster = LoopbackCluster(root, secrets.token_hex(16), workers=1, cpus_per_node=2, head_cpus=0)
    out, first_log = tmp_path / "stalled", tmp_path / "first.log"
    env = {**cluster.env, "MORE_INFER_STALL_S": "5"}
    proc = None
    try:
        cluster.start()
        command = [PYTHON, "-m", "more", "infer", str(ckpt), *ARGS, "--out", str(out), "--address", cluster.address,
                   "--net-workers", "1"]
        with first_log.open("w") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not (finished_images(out) >= 10 and network_workers(descendants(cluster.procs["worker0"].pid))):
            assert proc.poll() is None and time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(0.02)
        cluster.kill_worker(0)
        assert proc.wait(timeout=300) == 2, first_log.read_text()[-3000:]
        text = first_log.read_text()
        stopped = (r"error: infer: nothing could run for 5 s \(the live cluster has 0 CPU\(s\) and 0 GPU\(s\) free, "
                   r"\d+ batch\(es\) and \d+ CRF task\(s\) left\); the finished images are kept in ")
        assert re.search(stopped, text), text[-3000:]
        kept = finished_images(out)
        assert 10 <= kept < 96
        cluster.start_worker(0)
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"96 images, {kept} finished before" in again.stderr, again.stderr[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert_like_reference(out, reference)


def test_a_run_that_loses_more_workers_than_it_replaces_stops_with_one_line_and_keeps_its_images():
    import ray

    from more.harness.infer_fanout import LOST, WorkersLost, restart_budget

    assert restart_budget(1) == 3 and restart_budget(2) == 4 and restart_budget(8) == 16
    assert issubclass(ray.exceptions.ActorDiedError, LOST) and issubclass(ray.exceptions.NodeDiedError, LOST)
    assert not issubclass(ray.exceptions.RayTaskError, LOST)  # an error inside the call is the user's, not a loss
    from more.__main__ import user_error_line

    assert user_error_line(WorkersLost("infer: 4 losses ...")) == "error: infer: 4 losses ..."
