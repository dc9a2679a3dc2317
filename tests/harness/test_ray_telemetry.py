"""Ray with telemetry off (more/privacy.py): the embedded node's processes carry ``RAY_USAGE_STATS_ENABLED=0`` and
every worker gets all the switches through the job's runtime env, even when the driver's environment lacks them."""

from __future__ import annotations

from pathlib import Path

from more.privacy import TELEMETRY_OFF


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_embedded_ray_and_its_workers_run_with_telemetry_off(proc_root, monkeypatch):
    import ray
    from ray._common.usage import usage_lib

    from more.harness.local_ray import _node_pids, ray_runtime

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # restored after the test (ray_runtime sets them)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    # `import more` set all switches in this process; drop the non-Ray ones so that the node processes started
    # below inherit none of them: a worker can then only have them from the runtime env
    for key in TELEMETRY_OFF:
        if key != "RAY_USAGE_STATS_ENABLED":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    with ray_runtime(num_cpus=1, temp_dir=str(proc_root / "r")):
        assert not usage_lib.usage_stats_enabled()
        for kind in ("gcs_server", "raylet"):
            pids = _node_pids(kind)
            assert pids, kind
            assert all(environ_of(pid).get("RAY_USAGE_STATS_ENABLED") == "0" for pid in pids), kind
            assert all("MLFLOW_DISABLE_TELEMETRY" not in environ_of(pid) for pid in pids), kind

        @ray.remote(num_cpus=1)
        def worker_env() -> dict:
            import os

            return {key: os.environ.get(key) for key in TELEMETRY_OFF}

        assert ray.get(worker_env.remote(), timeout=120) == TELEMETRY_OFF
