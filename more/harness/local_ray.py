"""Ray for the harness: a private single-node Ray on a loopback address (the default), or a running cluster.

The embedded Ray listens on ``127.0.0.2``, not on the machine's external address: Ray rewrites ``127.0.0.1`` and
``localhost`` into the external address, while other loopback addresses are kept as given. Token authentication
is on, with a token generated for this process and handed to Ray's own processes through the environment (nothing
is written to ``~/.ray``). Every process Ray started is stopped by its PID when the context exits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

LOOPBACK_NODE_IP = "127.0.0.2"


@dataclass
class RayRuntime:
    """The Ray this process is connected to.

    Attributes:
        address: the GCS address (``127.0.0.2:PORT`` when embedded).
        embedded: True when this process started Ray itself (and stops it).
        temp_dir: Ray's session root of an embedded Ray (removed on exit).
        pids: PIDs of the node processes an embedded Ray started (GCS, raylet, monitors).
        dashboard_url: set when the dashboard was asked for.
    """

    address: str
    embedded: bool
    temp_dir: str | None = None
    pids: list[int] = field(default_factory=list)
    dashboard_url: str | None = None


def enable_token_auth(token: str | None = None) -> str:
    """Turn on Ray token auth for this process and its children; returns the token (given, inherited or new)."""
    token = token or os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    if "ray._raylet" in sys.modules:  # Ray read its config at import: make it see token mode and the token
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    return token


def _driver_node_ip(address: str) -> str | None:
    """A driver beside a loopback cluster must say so, or Ray picks the external address and finds no raylet."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host if host.startswith("127.") else None


@contextmanager
def ray_runtime(
    address: str | None = None,
    *,
    dashboard: bool = False,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    node_ip: str = LOOPBACK_NODE_IP,
    temp_dir: str | None = None,
) -> Iterator[RayRuntime]:
    """Start a private Ray on ``node_ip`` (``address=None``) or connect to the cluster at ``address``.

    Args:
        address: ``HOST:PORT`` of a running cluster's GCS, or None for an embedded single-node Ray.
        dashboard: start the dashboard (embedded Ray only; bound to 127.0.0.1).
        num_cpus: CPUs the embedded Ray offers (default: all cores).
        num_gpus: GPUs the embedded Ray offers (default: Ray's detection).
        node_ip: the loopback address the embedded node listens on.
        temp_dir: a short absolute path for Ray's sockets and logs (default: a new folder under /tmp).
    """
    if address is None:
        enable_token_auth()
    import ray

    if address is not None:
        kwargs = {"address": address, "log_to_driver": True}
        driver_ip = _driver_node_ip(address)
        if driver_ip:
            kwargs["_node_ip_address"] = driver_ip
        ray.init(**kwargs)
        try:
            yield RayRuntime(address=address, embedded=False)
        finally:
            ray.shutdown()
        return

    own_temp = temp_dir is None
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="more-ray-", dir="/tmp")  # socket paths must stay < 107 chars
    temp_dir = os.path.abspath(temp_dir)
    context = ray.init(
        _node_ip_address=node_ip, include_dashboard=dashboard, _temp_dir=temp_dir, num_cpus=num_cpus,
        num_gpus=num_gpus, dashboard_host="127.0.0.1",
    )
    runtime = RayRuntime(
        address=context.address_info["gcs_address"], embedded=True, temp_dir=temp_dir, pids=_node_pids(),
        dashboard_url=context.dashboard_url or None,
    )
    try:
        yield runtime
    finally:
        stop_embedded(runtime)
        if own_temp:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _node_pids() -> list[int]:
    from ray._private import worker

    node = worker._global_node
    if node is None:
        return []
    return [info.process.pid for infos in node.all_processes.values() for info in infos if info.process is not None]


def stop_embedded(runtime: RayRuntime, *, grace_s: float = 5.0) -> None:
    """``ray.shutdown()``, then SIGKILL by PID whatever of this Ray (node processes and their children) is left."""
    import psutil  # vendored by Ray; importable once ray is imported
    import ray

    procs = []
    for pid in runtime.pids:
        try:
            proc = psutil.Process(pid)
            procs.extend([proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    ray.shutdown()
    kill_processes(procs, grace_s=grace_s)


def kill_processes(procs: list, *, grace_s: float = 5.0) -> None:
    """Wait up to ``grace_s`` for ``psutil.Process`` objects to exit, then SIGKILL each one still running.

    ``psutil`` checks the process's start time, so a PID reused by an unrelated process is never signalled.
    """
    import psutil

    def running(proc: psutil.Process) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + grace_s
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    for proc in alive:
        try:
            proc.send_signal(signal.SIGKILL)  # psutil refuses if the PID now belongs to another process
        except psutil.NoSuchProcess:
            pass
