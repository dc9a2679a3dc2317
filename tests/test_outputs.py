"""more.outputs: ownership of output folders, dataset roots, atomic writes and disk-full errors (a real tmpfs)."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmpfs import mounted_tmpfs

from more.__main__ import user_error_line
from more.outputs import (
    MARK,
    DiskFullError,
    OutputError,
    atomic_dir,
    atomic_write,
    check_output_dir,
    check_replace,
    disk_full_error,
    human_bytes,
    is_disk_full,
    on_disk_full,
    own_dir,
    space_warning,
)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted at a folder of the test (root only; skipped where mount is refused)."""
    with mounted_tmpfs(tmp_path / f"fs-{uuid.uuid4().hex[:6]}", "2m") as mnt:
        yield mnt


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KB"
    assert human_bytes(64_000_000) == "64.0 MB"
    assert human_bytes(None) == "an unknown amount"


@pytest.mark.parametrize("inside", ["", "SegmentationClass", "SegmentationClass/sub"])
def test_output_inside_a_dataset_root_is_refused(tmp_path: Path, inside: str):
    root = tmp_path / "VOC2012"
    (root / "SegmentationClass").mkdir(parents=True)
    out = root / inside if inside else root
    with pytest.raises(OutputError, match=r"inside data.root .*--force"):
        check_output_dir(out, reads={"data.root": root})
    assert check_output_dir(out, reads={"data.root": root}, force=True).startswith("--out")


def test_output_inside_a_dataset_through_a_symlink_is_refused(tmp_path: Path):
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(OutputError, match="inside data.root"):
        check_output_dir(link / "masks", reads={"data.root": root})


def test_folder_with_foreign_files_is_refused_until_forced(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"'notes.txt'.*--force"):
        check_output_dir(out)
    check_output_dir(out, force=True)
    check_output_dir(out, recognised=("notes.txt",))  # a name that shows more made it


def test_own_dir_marks_and_an_owned_folder_passes(tmp_path: Path):
    out = own_dir(tmp_path / "a" / "b", command="infer")
    assert (out / MARK).is_file()
    (out / "x.png").write_bytes(b"1")
    check_output_dir(out)  # ours: may be replaced or resumed
    check_output_dir(tmp_path / "new")  # absent: fine
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_dir(empty)


def test_output_that_is_a_file(tmp_path: Path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(f)


def test_check_replace(tmp_path: Path):
    user_file = tmp_path / "best.yaml"
    user_file.write_text("mine")
    with pytest.raises(OutputError, match="was not written by more.*--force"):
        check_replace(user_file, what="--out")
    check_replace(user_file, what="--out", force=True)
    check_replace(tmp_path / "absent.yaml", what="--out")
    out = own_dir(tmp_path / "o", command="report")
    (out / "t.md").write_text("")
    check_replace(out / "t.md", what="--out")


def test_is_disk_full_kinds():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 400"))
    assert is_disk_full(RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"))
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = OSError(errno.ENOSPC, "full")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("unexpected value"))
    assert not is_disk_full(None)


def test_disk_full_error_is_one_user_line(tmp_path: Path):
    err = disk_full_error(tmp_path / "run" / "checkpoints", what="a checkpoint", need=64_000_000)
    line = user_error_line(err)
    assert line is not None and line.startswith("error: disk full: ")
    assert str(tmp_path) in line and "64.0 MB" in line and "\n" not in line


def test_disk_full_error_survives_copy_and_pickle(tmp_path: Path):
    """Ray copies and pickles the exception that ends a trial."""
    import copy
    import pickle

    err = disk_full_error(tmp_path, what="a checkpoint", need=10)
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert str(again) == str(err) and (again.path, again.free, again.need) == (err.path, err.free, 10)


def test_on_disk_full_passes_other_errors_and_keeps_their_files(tmp_path: Path):
    half = tmp_path / "half"
    half.mkdir()
    with pytest.raises(KeyError), on_disk_full(tmp_path, what="x", cleanup=(half,)):
        raise KeyError("other")
    assert half.exists()
    with pytest.raises(DiskFullError), on_disk_full(tmp_path, what="x", cleanup=(half,)):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not half.exists()


def test_atomic_write_replaces_whole(tmp_path: Path):
    p = atomic_write(tmp_path / "d" / "f.txt", "one")
    atomic_write(p, b"two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_atomic_dir_failure_leaves_previous(tmp_path: Path):
    final = tmp_path / "iter_1"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("boom")
    assert (final / "a").read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["iter_1"]


def test_space_warning(tmp_path: Path):
    assert space_warning(tmp_path, 1, "a checkpoint") is None
    text = space_warning(tmp_path, 10**18, "3 checkpoints")
    assert text is not None and "3 checkpoints" in text


def test_real_full_filesystem_atomic_write(small_fs: Path):
    target = small_fs / "big.bin"
    atomic_write(target, b"previous")
    with pytest.raises(DiskFullError, match=r"disk full: .*big.bin") as info:
        atomic_write(target, os.urandom(3_000_000))
    assert info.value.need == 3_000_000
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in small_fs.iterdir()) == ["big.bin"]


def test_real_full_filesystem_torch_save_in_atomic_dir(small_fs: Path):
    torch = pytest.importorskip("torch")
    final = small_fs / "checkpoints" / "iter_000010"
    with pytest.raises(DiskFullError, match="disk full"):
        with atomic_dir(final, what="a checkpoint", need=4_000_000) as tmp:
            torch.save({"w": torch.randn(1_000_000)}, tmp / "checkpoint.pt")
    assert list((small_fs / "checkpoints").iterdir()) == []
