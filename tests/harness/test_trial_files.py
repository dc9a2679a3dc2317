"""A trial's run-folder helpers: the newest loadable own checkpoint, the evaluation made there, continuing an earlier
result from a copy of it, and identity.json across attempts."""

from __future__ import annotations

import json

import torch

from more.harness.trial_files import (
    checkpoint_iteration,
    evaluation_at,
    newest_valid_checkpoint,
    seed_from_earlier,
    write_identity,
)


def checkpoint(run_dir, iteration: int, *, valid: bool = True):
    folder = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    folder.mkdir(parents=True)
    if valid:
        torch.save({"model": {}, "iteration": iteration}, folder / "checkpoint.pt")
    else:
        (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return folder


def test_the_newest_checkpoint_that_loads_is_chosen_and_its_evaluation_replayed(tmp_path):
    assert newest_valid_checkpoint(tmp_path) is None
    checkpoint(tmp_path, 3)
    six = checkpoint(tmp_path, 6)
    checkpoint(tmp_path, 9, valid=False)
    assert newest_valid_checkpoint(tmp_path) == six
    (tmp_path / "metrics.json").write_text(json.dumps({"iter": 6.0, "val/seg/miou": 12.5}))
    assert evaluation_at(tmp_path, six) == {"iter": 6.0, "val/seg/miou": 12.5}
    (tmp_path / "metrics.json").write_text(json.dumps({"iter": 9.0, "val/seg/miou": 13.0}))
    assert evaluation_at(tmp_path, six) is None  # a later evaluation: not the one made at this checkpoint
    assert checkpoint_iteration(six) == 6  # from the name; Tune's copies are named checkpoint_N but carry the file
    copy = tmp_path / "checkpoint_000001"
    copy.mkdir()
    assert checkpoint_iteration(copy) is None
    (copy / "iteration").write_text("6\n")
    assert checkpoint_iteration(copy) == 6


def test_a_continued_trial_starts_from_a_copy_of_the_earlier_result(tmp_path):
    old = tmp_path / "old" / "run"
    ckpt = checkpoint(old, 6)
    (old / "metrics.jsonl").write_text('{"iter": 3}\n{"iter": 6}\n')
    (old / "metrics.json").write_text('{"iter": 6}')
    (old / "eval").mkdir()
    (old / "eval" / "iter_000006.md").write_text("table")
    new = tmp_path / "new" / "run"
    start = seed_from_earlier(new, {"checkpoint": str(ckpt), "run_dir": str(old), "iterations": 6})
    assert start == new / "checkpoints" / "iter_000006" and (start / "checkpoint.pt").is_file()
    assert (new / "metrics.jsonl").read_text() == (old / "metrics.jsonl").read_text()
    assert (new / "eval" / "iter_000006.md").read_text() == "table"
    assert json.loads((new / "continued_from.json").read_text())["run_dir"] == str(old)
    assert newest_valid_checkpoint(new) == start and evaluation_at(new, start) == {"iter": 6}
    assert (ckpt / "checkpoint.pt").is_file()  # the earlier result is left as it was


def test_identity_json_keeps_every_attempt(tmp_path):
    ident = {"key": "k", "config_key": "c", "code": "x", "target_iters": 6}
    write_identity(tmp_path, ident, name="a-s0", tracking={"spec_hash": "h"})
    write_identity(tmp_path, ident, name="a-s0", tracking={"spec_hash": "h"})
    data = json.loads((tmp_path / "identity.json").read_text())
    assert data["key"] == "k" and data["trial"] == "a-s0" and data["spec_hash"] == "h"
    assert len(data["attempts"]) == 2 and all("started" in a and "pid" in a for a in data["attempts"])
    write_identity(tmp_path / "none", {}, name="b", tracking={})
    assert not (tmp_path / "none").exists()  # launches without identities (old experiments) write nothing
