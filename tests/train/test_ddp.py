"""The training loop in two processes (DDP over gloo on loopback): shards, identical weights, rank-0-only files,
exact resume and a NaN on one process stopping both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # spawned children import ddp_procs by name

from ddp_procs import run_ddp  # noqa: E402

from more.train.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402


def test_two_processes_train_disjoint_shards_into_the_same_weights_and_only_rank_0_writes(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.max_iters=4", "train.eval_every=2", "train.ckpt_every=2")
    run0, run1 = tmp_path / "run", tmp_path / "rank1_run"
    rank0, rank1 = run_ddp(cfg, tmp_path / "out", run_dirs=[run0, run1])
    assert rank0["error"] is None and rank1["error"] is None, (rank0["error"], rank1["error"])

    # each process got train.batch_size images per step, never one the other got in that step
    assert len(rank0["names"]) == len(rank1["names"]) == 4
    for a, b in zip(rank0["names"], rank1["names"]):
        assert len(a) == len(b) == cfg.train.batch_size and not set(a) & set(b)
    # 16 images, global batch 8: each epoch's two global batches cover the set once
    assert len({n for step in rank0["names"][:2] + rank1["names"][:2] for n in step}) == 16

    # DDP kept the replicas identical, and they trained
    w0, w1 = rank0["weights"], rank1["weights"]
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    final, earlier = load_checkpoint(run0)["model"], load_checkpoint(list_checkpoints(run0)[0])["model"]
    assert all(torch.equal(final[k], w) for k, w in w0.items())  # the last checkpoint holds the final weights
    assert any(not torch.equal(earlier[k], w) for k, w in w0.items())  # which moved between checkpoints

    # rank 0 alone evaluated, reported and wrote the run folder; rank 1's folder was never created
    assert [it for it, _ in rank0["reports"]] == [2.0, 4.0] and rank1["reports"] == []
    assert not run1.exists()
    assert [p.name for p in list_checkpoints(run0)] == ["iter_000002", "iter_000004"]
    records = [json.loads(line) for line in (run0 / "metrics.jsonl").read_text().splitlines()]
    train_iters = [r["iter"] for r in records if "val/seg/miou" not in r]
    assert train_iters == [1, 2, 3, 4]  # one record per iteration: nobody else appended
    assert rank0["result"]["val/seg/miou"] >= 0.0 and "val/seg/miou" not in rank1["result"]
    # the logged loss is the mean over both processes, the same number on both
    assert rank0["result"]["train/loss"] == pytest.approx(rank1["result"]["train/loss"], rel=1e-6)


@pytest.mark.slow
def test_two_process_resume_ends_like_an_uninterrupted_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.max_iters=4", "train.eval_every=2", "train.ckpt_every=2")
    full = run_ddp(cfg, tmp_path / "full_out", run_dirs=[tmp_path / "full"] * 2)
    assert all(r["error"] is None for r in full)

    broken = run_ddp(cfg, tmp_path / "broken_out", run_dirs=[tmp_path / "resumed"] * 2, stop_at=2)
    assert broken[0]["error"] == "stopped" and broken[1]["error"]  # rank 1 lost its peer mid-collective
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["iter_000002"]
    resumed = run_ddp(cfg, tmp_path / "resumed_out", run_dirs=[tmp_path / "resumed"] * 2,
                      resume=str(tmp_path / "resumed"))
    assert all(r["error"] is None for r in resumed), [r["error"] for r in resumed]
    assert [n for r in broken for n in r["names"][:2]] == [n for r in full for n in r["names"][:2]]
    assert resumed[0]["names"] == full[0]["names"][2:] and resumed[1]["names"] == full[1]["names"][2:]
    a, b = load_checkpoint(tmp_path / "full")["model"], load_checkpoint(tmp_path / "resumed")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for key in ("train/loss", "val/seg/miou", "val/cam/miou"):
        assert resumed[0]["result"][key] == pytest.approx(full[0]["result"][key], rel=1e-4, abs=1e-5), key


def test_nan_on_one_process_stops_both_and_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg()  # 6 iterations, checkpoints at 3 and 6, losses read every step
    ranks = run_ddp(cfg, tmp_path / "out", run_dirs=[tmp_path / "nan"] * 2, poison=(1, 5))  # rank 1, iteration 4
    for r in ranks:
        assert r["error"] and r["error"].startswith("TrainingDiverged: loss term 'mct'"), r["error"]
        assert "step 4" in r["error"]
        assert len(r["names"]) == 5  # both stopped at the same read point, after iteration 4
    assert [p.name for p in list_checkpoints(tmp_path / "nan")] == ["iter_000003"]
