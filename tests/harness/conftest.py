"""Fixtures for the harness tests: short private folders whose processes are always SIGKILLed by PID at teardown,
and the two-node loopback Ray cluster (module-scoped). ``loopback_cluster.py`` is made importable here
(pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from loopback_cluster import LoopbackCluster, kill_marked, short_dir  # noqa: E402


@pytest.fixture
def proc_root() -> Iterator[Path]:
    """A short folder under /tmp used as HOME/TMPDIR of the processes a test starts; they die with the test."""
    root = short_dir()
    try:
        yield root
    finally:
        kill_marked(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator[LoopbackCluster]:
    """Head on 127.0.0.2 and worker on 127.0.0.3 (one CPU each), token auth, private HOME and temp dir."""
    root = short_dir("mc-")
    cluster = LoopbackCluster(root, token=secrets.token_hex(16))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
