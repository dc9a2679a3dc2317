"""A trial whose disk fills up: it fails with the one ``disk full`` line (results table, ``status``), and Tune's
retries on the still-full disk fail at once with the same line instead of training again."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest
from loopback_cluster import PYTHON, ablate_command, process_env, tiny_overrides, write_spec
from tmpfs import mounted_tmpfs

from more.harness.disk_full import DISK_FULL_FILE, disk_full_guard, refuse_full_disk_retry
from more.harness.spec import expand, load_spec, spec_hash
from more.outputs import DiskFullError, atomic_write


def test_a_retry_fails_at_once_while_the_disk_is_full_and_trains_once_there_is_room(tmp_path):
    with mounted_tmpfs(tmp_path / "fs", "1m") as mnt:
        run, filler = mnt / "run", mnt / "filler"
        filler.write_bytes(b"\0" * 600_000)
        with pytest.raises(DiskFullError) as first, disk_full_guard(run):
            atomic_write(run / "checkpoint.pt", b"\1" * 600_000, what="a checkpoint")
        assert json.loads((run / DISK_FULL_FILE).read_text())["need"] == 600_000
        assert sorted(p.name for p in run.iterdir()) == [DISK_FULL_FILE]  # the half-written file is gone
        with pytest.raises(DiskFullError, match=r"\[not retried: .* still has \d+(\.\d)? KB free\]") as again:
            refuse_full_disk_retry(run)
        assert str(again.value).startswith(str(first.value))
        filler.unlink()
        refuse_full_disk_retry(run)  # room again: the record goes and the attempt trains
        assert not (run / DISK_FULL_FILE).exists()


def test_the_guard_names_a_raw_enospc_and_passes_other_errors(tmp_path):
    with pytest.raises(DiskFullError, match=r"^disk full: writing the trial's files to .*OSError: \[Errno 28\]"):
        with disk_full_guard(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint_000001"))
    assert (tmp_path / DISK_FULL_FILE).is_file()
    (tmp_path / DISK_FULL_FILE).unlink()
    with pytest.raises(KeyError), disk_full_guard(tmp_path):
        raise KeyError("other")
    assert not (tmp_path / DISK_FULL_FILE).exists()
    refuse_full_disk_retry(tmp_path)  # no record: nothing to refuse


@pytest.mark.slow
def test_an_ablation_trial_on_a_full_disk_fails_with_one_line_and_is_not_retrained(proc_root):
    # vit_micro with a 32-channel decoder: checkpoints of ~2.5 MB (in the run folder only: Tune keeps no copy of a
    # run folder's checkpoints); 4 MB hold the first but not the second
    overrides = {**tiny_overrides(proc_root / "synth", iters=6, every=3), "model.decoder_channels": 32,
                 "train.keep_ckpts": 3}
    spec = write_spec(proc_root / "full.yaml", "full", {"more": {}}, overrides=overrides, max_failures=2)
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    env = process_env(proc_root)
    with mounted_tmpfs(proc_root / "small", "4m") as storage:
        out = subprocess.run(ablate_command(spec, storage, "--no-tracking"), env=env, cwd=proc_root,
                             capture_output=True, text=True, timeout=900)
        text = out.stdout + out.stderr
        assert out.returncode == 1, text[-4000:]
        experiment = storage / f"full-{digest}"
        rows = json.loads((experiment / "results.json").read_text())["trials"]
        assert [r["status"] for r in rows] == ["ERROR"]
        error = rows[0]["error"]
        assert error.startswith("DiskFullError: disk full: writing a checkpoint to "), error
        assert "iter_000006" in error and "[not retried: " in error, error  # the last retry refused at once
        run = experiment / rows[0]["trial"] / "run"
        attempts = json.loads((run / "identity.json").read_text())["attempts"] if (run / "identity.json").exists() \
            else []
        assert len(attempts) <= 1, attempts  # the retries stopped before starting another attempt
        assert not [p for p in storage.rglob("*") if p.name.startswith((".tmp_", ".old_"))]
        assert any("Failed trials:" in line for line in out.stdout.splitlines())
        status = subprocess.run([PYTHON, "-m", "more", "status", str(spec), "--storage", str(storage)], env=env,
                                cwd=proc_root, capture_output=True, text=True, timeout=120)
        assert "disk full" in status.stdout, status.stdout + status.stderr
