"""Where ``infer`` writes (issue 18): never inside the dataset it reads nor over files more did not create unless
``--force``; a full disk is one line, leaves no half-written file, and a rerun after freeing space finishes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from infer_helpers import assert_same_outputs, leftovers, tree_digest
from tmpfs import mounted_tmpfs

from more.__main__ import main

TASKS = [["--task", "seeds"], ["--task", "masks"], ["--task", "seg", "--crf"], ["--task", "cam2seg", "--crf"]]
IDS = ["seeds", "masks", "seg", "cam2seg"]


def infer(capsys, *argv: str) -> tuple[int, str]:
    code = main(["infer", "--no-tracking", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("task", TASKS, ids=IDS)
@pytest.mark.parametrize("inside", ["SegmentationClassAug", ".", "JPEGImages", "pseudo_masks/new"])
def test_out_inside_the_dataset_is_refused_and_the_dataset_unchanged(infer_ckpt, data_copy, capsys, task, inside):
    before = tree_digest(data_copy)
    out = data_copy / inside
    code, err = infer(capsys, str(infer_ckpt), *task, "--split", "val", "--out", str(out), f"data.root={data_copy}")
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "inside data.root" in errors[0] and "--force" in errors[0], err
    assert tree_digest(data_copy) == before  # byte-identical, and nothing added
    assert not (data_copy / "pseudo_masks").exists()


def test_force_writes_inside_the_dataset_without_touching_its_files(infer_ckpt, data_copy, capsys):
    before = tree_digest(data_copy)
    out = data_copy / "pseudo"
    code, err = infer(capsys, str(infer_ckpt), "--task", "masks", "--split", "val", "--out", str(out),
                      f"data.root={data_copy}", "--force")
    assert code == 0, err
    # besides --out, only the data package's label cache (ROOT/.more_cache, more.data.voc) may appear or change
    after = {k: v for k, v in tree_digest(data_copy).items() if not k.startswith(("pseudo/", ".more_cache/"))}
    assert after == {k: v for k, v in before.items() if not k.startswith(".more_cache/")}
    assert len(list((out / "masks").iterdir())) == 6


def test_folder_with_foreign_files_is_refused_until_forced(infer_ckpt, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "seeds").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes\n")
    (out / "seeds" / "0000.png").write_bytes(b"not ours")
    before = tree_digest(out)
    code, err = infer(capsys, str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(out))
    assert code == 2 and "holds files more did not create" in err and "--force" in err
    assert tree_digest(out) == before
    code, err = infer(capsys, str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(out), "--force")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "my notes\n" and (out / ".more-output.json").is_file()


def test_an_owned_folder_is_resumed_without_force(infer_ckpt, tmp_path, capsys):
    out = tmp_path / "owned"
    args = [str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(out)]
    assert infer(capsys, *args)[0] == 0
    assert json.loads((out / ".more-output.json").read_text())["created_by"] == "more infer"
    code = main(["infer", "--no-tracking", *args])
    assert code == 0 and "6 images (0 this run)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- disk full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (root only; skipped where mount is refused)."""
    with mounted_tmpfs(tmp_path / "small", "1m") as mnt:
        yield mnt


def test_full_disk_is_one_line_and_a_rerun_after_freeing_space_finishes(infer_ckpt, small_fs, tmp_path, capsys):
    reference = tmp_path / "reference"
    args = [str(infer_ckpt), "--task", "masks", "--split", "train"]
    assert infer(capsys, *args, "--out", str(reference))[0] == 0
    filler = small_fs / "filler"
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    filler.write_bytes(b"\0" * (free - 96 * 1024))  # room for a few images' files (tmpfs counts 4 KB pages)
    out = small_fs / "out"
    code, err = infer(capsys, *args, "--out", str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("error: disk full: ") and str(small_fs) in errors[0], err
    assert "Traceback" not in err
    assert not leftovers(out)
    lines = (out / "done.jsonl").read_bytes().splitlines()
    assert 0 < len(lines) < 32, "the disk filled before the first record or not at all"
    masks_before = {json.loads(line)["name"] for line in lines[:-1] if b'"masks"' in line}
    for folder in ("seeds", "masks", "maps"):  # every file that exists is whole: equal to the reference's
        for path in (out / folder).glob("*"):
            assert path.read_bytes() == (reference / folder / path.name).read_bytes(), path

    filler.unlink()
    code, err = infer(capsys, *args, "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "metrics.json").read_text())
    assert record["num_images"] == 16
    assert record["computed"] <= 16 - len(masks_before)  # (the last line may have been torn)
    assert_same_outputs(reference, out, ("seeds", "masks", "maps"))
    assert not leftovers(out)


BAD_OPTIONS = [  # arguments -> what the one error line names
    (["--net-workers", "-1"], "--net-workers must be >= 0"),
    (["--workers", "-2"], "--workers must be >= 0"),
    (["--archive"], "--archive"),
    (["--address", "127.0.0.1:CLOSED"], "--address"),
    (["--tracking-uri", "file:///tmp/mlruns"], "file store"),
    (["--split", "nosuchsplit"], "nosuchsplit"),
    (["eval.bkg_thre=abc"], "eval.bkg_thre"),
]


@pytest.mark.parametrize(("extra", "named"), BAD_OPTIONS, ids=[b[1].split()[0] for b in BAD_OPTIONS])
def test_bad_options_are_one_line_before_anything_is_written(infer_ckpt, tmp_path, capsys, extra, named):
    from more.tracking.store import free_port

    extra = [x.replace("CLOSED", str(free_port())) for x in extra]
    out = tmp_path / "out"
    code = main(["infer", str(infer_ckpt), "--task", "seeds", "--out", str(out), *extra])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and named in errors[0], err
    assert "Traceback" not in err and not out.exists()
