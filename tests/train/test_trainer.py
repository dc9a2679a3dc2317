"""The training loop end to end on a tiny synthetic set: files, exact resume, NaN handling, checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch

from more.train import TrainingDiverged, train
from more.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_writes_config_metrics_checkpoints_and_reports(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    reports = []
    result = train(cfg, run_dir=tmp_path / "run", report=lambda m, d: reports.append((m, d)), log=lambda _: None)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "git.txt").is_file() and (run / "metrics.json").is_file()
    assert [p.name for p in list_checkpoints(run)] == ["iter_000003", "iter_000006"]
    assert [m["iter"] for m, _ in reports] == [3.0, 6.0] and all(
        d and d.endswith(f"iter_00000{int(m['iter'])}") for m, d in reports
    )
    for out in ("cam", "aux_cam", "lam", "fused", "seg"):
        assert 0.0 <= result[f"val/{out}/miou"] <= 100.0
    train_recs = [r for r in read_metrics(run) if "train/loss" in r and "val/seg/miou" not in r]
    assert [r["iter"] for r in train_recs] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) >= {"train/cre", "train/ure", "train/ptc", "train/seg", "train/energy"} for r in train_recs)
    assert (run / "eval" / "iter_000006.md").read_text().count("|") > 10


@pytest.mark.parametrize("extra", [(), ("train.batch_size=2", "train.accum_steps=2")], ids=["plain", "accumulation"])
def test_resumed_run_ends_like_an_uninterrupted_one(tiny_cfg, tmp_path, extra):
    cfg = tiny_cfg(*extra)
    full = train(cfg, run_dir=tmp_path / "full", log=lambda _: None)
    short = tiny_cfg("train.max_iters=6", *extra)

    # interrupt after the first checkpoint (iteration 3) by stopping from the report callback
    class Stop(Exception):
        pass

    def stop(metrics, ckpt):
        raise Stop

    with pytest.raises(Stop):
        train(short, run_dir=tmp_path / "resumed", report=stop, log=lambda _: None)
    resumed = train(short, run_dir=tmp_path / "resumed", resume=str(tmp_path / "resumed"), log=lambda _: None)
    for key in ("train/loss", "train/cre", "train/ure", "val/seg/miou", "val/cam/miou", "val/lam/miou"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-4, abs=1e-5), key
    a = load_checkpoint(tmp_path / "full")["model"]
    b = load_checkpoint(tmp_path / "resumed")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert [r["iter"] for r in read_metrics(tmp_path / "resumed")] == [
        r["iter"] for r in read_metrics(tmp_path / "full")
    ]


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    import more.train.step as step

    real = step.mct_loss
    calls = {"n": 0}

    def poisoned(**kw):
        calls["n"] += 1
        value = real(**kw)
        return value * float("nan") if calls["n"] == 5 else value  # the 5th step (0-based iteration 4)

    monkeypatch.setattr(step, "mct_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"'mct'.*step 4"):
        train(tiny_cfg(), run_dir=tmp_path / "nan", log=lambda _: None)
    ckpts = list_checkpoints(tmp_path / "nan")
    assert [p.name for p in ckpts] == ["iter_000003"]
    payload = load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())


def test_missing_and_corrupt_checkpoints_give_clear_errors(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train(tiny_cfg(), run_dir=tmp_path / "r", resume=str(tmp_path / "nothing"), log=lambda _: None)
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad.parent)
