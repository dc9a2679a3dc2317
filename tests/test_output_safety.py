"""Where ``train`` and ``eval`` write: a folder they create carries more's marker, a user's folder is written only with
``--force`` (and its files are left alone), a run folder made before the marker existed still resumes and
continues. The refusals themselves are in ``tests/test_bad_input.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_config import TINY

from more.__main__ import main
from more.outputs import MARK

SHORT = [*TINY, "train.max_iters=3", "model.decoder_channels=32"]


@pytest.fixture
def cfg(tiny_root: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"preset": "synthetic", "overrides": [*SHORT, f"data.root={tiny_root}",
                                                                         f"runtime.out_dir={tmp_path / 'runs'}"]}))
    return path


def test_train_with_force_writes_into_a_user_folder_and_leaves_its_files(cfg, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    assert main(["train", str(cfg), "--run-dir", str(mine)]) == 2
    assert "--force" in capsys.readouterr().err and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert main(["train", str(cfg), "--run-dir", str(mine), "--force"]) == 0
    assert (mine / "notes.txt").read_text() == "keep me\n"
    assert json.loads((mine / MARK).read_text())["created_by"] == "more train"
    assert (mine / "checkpoints" / "iter_000003" / "checkpoint.pt").is_file()


def test_run_folders_without_the_marker_still_resume_and_continue(cfg, tmp_path, monkeypatch):
    import more.train.trainer as trainer

    calls: list[dict] = []
    monkeypatch.setattr(trainer, "train", lambda cfg, **kw: calls.append(kw) or {"iter": 0.0})
    old = tmp_path / "old_run"  # as a run wrote it before output folders were marked
    (old / "checkpoints").mkdir(parents=True)
    for name, text in (("config.yaml", "name: x\n"), ("metrics.jsonl", '{"iter": 3}\n'), ("git.txt", "abc\n")):
        (old / name).write_text(text)
    assert main(["train", str(cfg), "--run-dir", str(old)]) == 0
    (old / "metrics.jsonl").unlink()  # one of a run's files alone is not enough: a user's folder may hold a git.txt
    assert main(["train", str(cfg), "--run-dir", str(old)]) == 2
    assert [c["run_dir"] for c in calls] == [str(old)]


def test_eval_marks_its_folder_and_writes_into_a_user_folder_only_with_force(cfg, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run)]) == 0
    ckpt = run / "checkpoints" / "iter_000003"
    assert main(["eval", str(ckpt)]) == 0
    default = ckpt / "eval_val"
    assert sorted(p.name for p in default.iterdir()) == sorted([MARK, "eval.json", "eval.md"])
    assert main(["eval", str(ckpt)]) == 0  # its own folder: replaced in place
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "eval.md").write_text("my notes\n")
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--out", str(mine)]) == 2
    assert "eval.md" in capsys.readouterr().err and (mine / "eval.md").read_text() == "my notes\n"
    assert main(["eval", str(ckpt), "--out", str(mine), "--force"]) == 0
    assert (mine / "eval.json").is_file() and (mine / "eval.md").read_text().startswith("# eval of ")
