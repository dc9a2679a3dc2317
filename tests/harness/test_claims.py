"""Claims per content key: exclusive creation, the stale-claim rule, heartbeat and release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from more.harness.claims import ClaimSet, supported


def test_a_claim_is_exclusive_until_released(tmp_path):
    first, second = ClaimSet(str(tmp_path), experiment="e1"), ClaimSet(str(tmp_path), experiment="e2")
    assert first.claim("k1", "a-s0") is None
    assert first.claim("k1", "a-s0") is None  # its own claim again
    owner = second.claim("k1", "a-s0")
    assert owner is not None and owner["experiment"] == "e1" and owner["pid"] == os.getpid()
    assert second.holder("k1")["trial"] == "a-s0"
    second.release()  # holds nothing: removes nothing
    assert (tmp_path / ".claims" / "k1.json").is_file()
    first.release()
    assert not (tmp_path / ".claims" / "k1.json").exists()
    assert second.claim("k1", "a-s0") is None


def test_claims_of_a_dead_owner_or_without_heartbeat_are_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims = ClaimSet(str(tmp_path), experiment="mine", stale_s=60)
    folder = tmp_path / ".claims"
    folder.mkdir()
    (folder / "k1.json").write_text(json.dumps({"host": claims.owner["host"], "pid": int(dead.stdout), "token": "t"}))
    (folder / "k2.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t"}))
    (folder / "k3.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t"}))
    old = time.time() - 120
    os.utime(folder / "k2.json", (old, old))
    assert claims.claim("k1", "a") is None  # its owner's process is gone
    assert claims.claim("k2", "b") is None  # no heartbeat for longer than stale_s
    assert claims.claim("k3", "c")["host"] == "elsewhere"  # fresh, on another host: alive as far as we can tell
    assert json.loads((folder / "k1.json").read_text())["experiment"] == "mine"


def test_the_heartbeat_keeps_claims_fresh_and_exit_releases_them(tmp_path):
    with ClaimSet(str(tmp_path), experiment="e", heartbeat_s=0.05) as claims:
        assert claims.claim("k", "t") is None
        path = tmp_path / ".claims" / "k.json"
        os.utime(path, (0, 0))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > time.time() - 60
    assert not path.exists()


def test_object_stores_have_no_claims():
    assert supported("/data/ray") and not supported("s3://bucket/ray")


def test_a_claim_of_an_owner_that_exited_but_was_not_reaped_is_taken_over(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for until the end: a zombie meanwhile
    try:
        deadline = time.time() + 60
        while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline, "the child did not exit"
            time.sleep(0.05)
        claims = ClaimSet(str(tmp_path), experiment="mine")
        (tmp_path / ".claims").mkdir()
        (tmp_path / ".claims" / "k1.json").write_text(
            json.dumps({"host": claims.owner["host"], "pid": zombie.pid, "token": "t"}))
        assert claims.claim("k1", "a") is None  # os.kill(pid, 0) still succeeds on a zombie: the state says it exited
        alive = ClaimSet(str(tmp_path), experiment="other")
        assert alive.claim("k1", "a")["experiment"] == "mine"  # a live owner (this process) keeps its claim
    finally:
        zombie.wait(timeout=30)
