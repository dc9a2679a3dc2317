"""A full disk during training: one ``error: disk full`` line (exit 2), nothing half-written left, the last complete
checkpoint kept and resumable; the space warning before training; the run-folder writes on a real tmpfs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from tiny_config import TINY
from tmpfs import mounted_tmpfs

from more.__main__ import main
from more.outputs import DiskFullError
from more.train.run_files import append_jsonl, checkpoint_iterations, keep_records_until, space_needed

# vit_micro with a 32-channel decoder: a checkpoint of ~2.5 MB, so a 4 MB filesystem holds the first and not the second
SMALL = [*TINY, "model.decoder_channels=32"]


def write_config(path: Path, data_root: Path) -> Path:
    path.write_text(yaml.safe_dump({"preset": "synthetic", "overrides": [*SMALL, f"data.root={data_root}"]}))
    return path


def test_train_stops_with_one_line_when_the_disk_fills_during_a_checkpoint(tiny_root, tmp_path, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", tiny_root)
    with mounted_tmpfs(tmp_path / "small", "4m") as mnt:
        run = mnt / "run"
        code = main(["train", str(cfg), "--run-dir", str(run)])
        err = capsys.readouterr().err
        assert "Traceback" not in err and "bug in more" not in err, err
        assert code == 2, err
        warning = next(line for line in err.splitlines() if line.startswith("warning: "))
        assert str(mnt) in warning and "2 checkpoint(s) of about 2.5 MB" in warning
        errors = [line for line in err.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and errors == [err.strip().splitlines()[-1]], err
        line = errors[0]
        assert line.startswith(f"error: disk full: writing a checkpoint to {run / 'checkpoints' / 'iter_000006'}")
        assert "a checkpoint needs about 2.5 MB" in line and f"{run / 'checkpoints' / 'iter_000003'} is kept" in line
        assert re.search(r"failed, 1\.\d MB free on ", line), line  # the half-written file's space counted as free
        left = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*"))
        assert not [p for p in left if ".tmp" in p or ".old_" in p], left
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter_000003"]
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # whole lines only
        assert max(r["iter"] for r in records) == 6
        roomy = tmp_path / "roomy"
        shutil.copytree(run, roomy)
    assert main(["train", str(cfg), "--resume", str(roomy)]) == 0
    assert sorted(p.name for p in (roomy / "checkpoints").iterdir()) == ["iter_000003", "iter_000006"]
    assert json.loads((roomy / "metrics.json").read_text())["iter"] == 6


def test_append_jsonl_leaves_no_partial_line_on_a_full_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "1m") as mnt:
        path = mnt / "metrics.jsonl"
        append_jsonl(path, {"iter": 1})
        (mnt / "filler").write_bytes(b"\0" * (1_048_576 - 8192))  # leave less than one page free
        with pytest.raises(DiskFullError, match=r"disk full: writing metrics.jsonl"):
            append_jsonl(path, {"iter": 2, "pad": "x" * 20_000})
        assert path.read_text() == '{"iter": 1}\n'


def test_keep_records_until(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iter": i}) + "\n" for i in (1, 2, 3, 4)))
    keep_records_until(path, 2)
    assert path.read_text() == '{"iter": 1}\n{"iter": 2}\n'
    keep_records_until(tmp_path / "absent.jsonl", 2)
    assert (tmp_path / "absent.jsonl").read_text() == ""


def test_space_needed_by_hand():
    from more.config import load_config

    cfg = load_config("synthetic", ["train.max_iters=10", "train.eval_every=4", "train.ckpt_every=3",
                                    "train.log_every=5", "train.keep_ckpts=2"])
    assert checkpoint_iterations(cfg, 0) == [3, 4, 6, 8, 9, 10]
    assert checkpoint_iterations(cfg, 8) == [9, 10]
    # from scratch: 6 checkpoints, peak keep+1 = 3; evaluations at 4, 8, 10; 10 // 5 + 1 = 3 log records; C = 3
    need, words = space_needed(cfg, checkpoint_bytes=1000, start=0, existing=0, num_classes=3)
    assert need == 3 * 1000 + 3 * (400 * 4 + 4000) + 3 * 600
    assert words.startswith("3 checkpoint(s) of about 1.0 KB") and "3 evaluation(s)" in words
    # resumed at 8 with 2 on disk: the next one is written before the oldest goes, so 1 more at the peak
    need, _ = space_needed(cfg, checkpoint_bytes=1000, start=8, existing=2, num_classes=3)
    assert need == 1000 + 1 * (400 * 4 + 4000) + (2 // 5 + 1) * 600
    # more on disk than kept (keep_ckpts lowered): still one new checkpoint before pruning
    need, _ = space_needed(cfg, checkpoint_bytes=1000, start=8, existing=5, num_classes=3)
    assert need == 1000 + 5600 + 600
