"""Ray with telemetry off (more/privacy.py): an embedded node's processes and workers carry every switch, even when
the driver's environment lost them; on a cluster started without them, the workers get them from the job's runtime
env."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from loopback_cluster import LoopbackCluster, comm, descendants

from more.privacy import TELEMETRY_OFF

NOT_RAY = [key for key in TELEMETRY_OFF if key != "RAY_USAGE_STATS_ENABLED"]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def worker_env() -> dict[str, str | None]:
    import ray

    @ray.remote(num_cpus=1)
    def read() -> dict:
        import os

        return {key: os.environ.get(key) for key in TELEMETRY_OFF}

    return ray.get(read.remote(), timeout=180)


@pytest.fixture
def ray_auth_restored(monkeypatch):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # restored after the test (the code under test sets them)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def test_embedded_ray_and_its_workers_run_with_telemetry_off(proc_root, monkeypatch, ray_auth_restored):
    from ray._common.usage import usage_lib

    from more.harness.local_ray import _node_pids, ray_runtime

    for key in TELEMETRY_OFF:  # as if the driver's environment had lost them after `import more`
        monkeypatch.delenv(key, raising=False)
    with ray_runtime(num_cpus=1, temp_dir=str(proc_root / "r")):
        assert not usage_lib.usage_stats_enabled()
        for kind in ("gcs_server", "raylet"):
            pids = _node_pids(kind)
            assert pids, kind
            for pid in pids:
                env = environ_of(pid)
                assert {key: env.get(key) for key in TELEMETRY_OFF} == TELEMETRY_OFF, kind
        assert worker_env() == TELEMETRY_OFF


def test_workers_on_a_cluster_started_without_the_switches_get_them_from_the_runtime_env(proc_root, monkeypatch,
                                                                                         ray_auth_restored):
    from more.harness.local_ray import enable_token_auth, ray_runtime

    cluster = LoopbackCluster(proc_root, token=secrets.token_hex(16))
    for key in NOT_RAY:  # a head that knows nothing of more's switches (Ray's own is off: it is a test cluster)
        cluster.env.pop(key, None)
    try:
        cluster.start_head()
        raylets = [pid for pid in descendants(cluster.head.pid) if comm(pid) == "raylet"]
        assert raylets and all(key not in environ_of(pid) for pid in raylets for key in NOT_RAY)
        enable_token_auth(cluster.token)
        with ray_runtime(cluster.address):
            assert worker_env() == TELEMETRY_OFF
    finally:
        cluster.stop()
