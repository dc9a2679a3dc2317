"""Ray for the harness: a private single-node Ray on a loopback address (the default), or a running cluster.

The embedded Ray listens on ``127.0.0.2``, not on the machine's external address: Ray rewrites ``127.0.0.1`` and
``localhost`` into the external address, while other loopback addresses are kept as given. Token authentication
is on, with a token generated for this process and handed to Ray's own processes through the environment (nothing
is written to ``~/.ray``). Every process Ray started is stopped by its PID when the context exits, and, should
the driver die without leaving it (SIGKILL, OOM killer), by a small reaper process that outlives the driver.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from more.privacy import disable_telemetry, telemetry_env

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


def _worker_env() -> dict:
    """``ray.init`` keywords that give every worker of the job on a cluster the telemetry switches (more/privacy.py),
    also when its nodes were started without them. (An embedded Ray's workers inherit them from the driver instead: a
    runtime env would cost each new worker ~1 s, as prestarted workers cannot serve it.)"""
    env = telemetry_env()
    return {"runtime_env": {"env_vars": env}} if env else {}


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
        disable_telemetry()  # Ray's node processes, and so every worker, inherit this process's environment
    import ray

    if address is not None:
        kwargs = {"address": address, "log_to_driver": True, **_worker_env()}
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
    reaper = _start_reaper(temp_dir, remove=own_temp)
    runtime = RayRuntime(address="", embedded=True, temp_dir=temp_dir)
    try:
        context = ray.init(
            _node_ip_address=node_ip, include_dashboard=dashboard, _temp_dir=temp_dir, num_cpus=num_cpus,
            num_gpus=num_gpus, dashboard_host="127.0.0.1",
        )
        runtime.address = context.address_info["gcs_address"]
        runtime.pids = _node_pids()
        runtime.dashboard_url = context.dashboard_url or None
        try:
            reaper.stdin.write("".join(f"{pid}\n" for pid in runtime.pids).encode())
            reaper.stdin.flush()
        except BrokenPipeError:  # a reaper that died leaves only the after-crash cleanup undone
            pass
        yield runtime
    finally:
        stop_embedded(runtime)
        try:
            reaper.stdin.close()  # the reaper sweeps what is left and removes the temp dir
            reaper.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            reaper.kill()


# Run by a separate process that outlives the driver. The driver sends it the PIDs of the node's processes through
# its stdin; while the pipe is open it notes every descendant of those (PID and start time) every two seconds. End
# of file means the driver has exited, however it exited (SIGKILL and OOM included): Ray's GCS and raylet share the
# driver's fate, but the raylet's agents (dashboard, runtime env) would be left behind, reparented to init. Each
# noted process still running with the same start time gets SIGKILL, then the temp dir goes. Needs /proc (Linux);
# elsewhere only the folder goes.
_REAPER = r"""
import os, select, shutil, signal, sys, time
temp_dir, remove = sys.argv[1], sys.argv[2] == "1"
proc = os.path.isdir("/proc")
roots, noted = set(), {}

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[19], int(fields[1])  # start time, parent
    except (OSError, IndexError, ValueError):
        return None

def note():
    table = {int(n): st for n in os.listdir("/proc") if n.isdigit() and (st := stat(int(n)))}
    frontier = [p for p in roots if p in table]
    while frontier:
        for p in frontier:
            noted.setdefault(p, table[p][0])
        frontier = [p for p, (_, parent) in table.items() if parent in frontier and p not in noted]

pending = b""
while True:
    if select.select([0], [], [], 2.0)[0]:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        roots.update(int(x) for x in lines if x.strip())
    if proc:
        note()
for _ in range(3 if proc else 0):
    note()
    alive = [p for p, started in noted.items() if (st := stat(p)) and st[0] == started]
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    if not alive:
        break
    time.sleep(0.5)
if remove:
    shutil.rmtree(temp_dir, ignore_errors=True)
"""


def _start_reaper(temp_dir: str, *, remove: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, temp_dir, "1" if remove else "0"], stdin=subprocess.PIPE,
        start_new_session=True,  # its own session: a Ctrl-C in the terminal does not reach it
    )


def _node_pids(kind: str | None = None) -> list[int]:
    """PIDs of the processes the embedded node started (all, or of one kind such as ``raylet``)."""
    from ray._private import worker

    node = worker._global_node
    if node is None:
        return []
    return [info.process.pid for k, infos in node.all_processes.items() if kind in (None, k)
            for info in infos if info.process is not None]


def stop_embedded(runtime: RayRuntime, *, grace_s: float = 5.0) -> None:
    """``ray.shutdown()``, then SIGKILL by PID whatever of this Ray (node processes and their children) is left."""
    import psutil  # vendored by Ray; importable once ray is imported
    import ray

    procs = []
    for pid in runtime.pids:  # empty when ray.init failed: nothing of ours to find, the reaper sweeps
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
