"""The services of ``bench_scale.py``: PostgreSQL with an MLflow server on it, and a loopback Ray cluster of a head
and several worker nodes that declare GPUs they do not have.

Every process is started here with a private ``HOME`` and ``TMPDIR`` (a short folder under /tmp) and stopped by its
PID: the ``ray start --block`` processes and their descendants, then any process of this user whose environment
names that folder (only processes this benchmark started can carry it). The process bookkeeping is the tests'
(``tests/harness/loopback_cluster.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests" / "harness"))  # last: its light_trainer.py must not shadow bench/s
sys.path.insert(0, str(ROOT))

from loopback_cluster import PYTHON, RAY, _port_args, descendants, kill_marked, process_env, running, sigkill  # noqa: E402, I001

HEAD_IP = "127.0.0.2"


def worker_ip(i: int) -> str:
    return f"127.0.0.{3 + i}"


class ScaleCluster:
    """``ray start --block``: a head on 127.0.0.2 (no GPU: it holds the driver's Tune actors only) and ``workers``
    nodes on 127.0.0.3, .4, ..., each declaring ``gpus`` GPUs and as many CPUs; token auth; fast node-death
    detection (a killed node is noticed in seconds, as a cluster tuned for preemptible nodes would)."""

    def __init__(self, root: Path, token: str, *, workers: int, gpus: int, extra_env: dict[str, str],
                 logs: Path) -> None:
        self.root, self.workers, self.gpus, self.logs = root, workers, gpus, logs
        logs.mkdir(parents=True, exist_ok=True)
        self.env = process_env(root, token=token)
        self.env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'bench'}"  # the light trainer is importable on every node
        self.env.update(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                        RAY_health_check_failure_threshold="3", **extra_env)
        self.address = ""
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def slots(self) -> int:
        return self.workers * self.gpus

    def _start(self, name: str, args: list[str], cpus: int, gpus: int) -> None:
        with open(self.logs / f"{name}.log", "ab") as fh:
            self.procs[name] = subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", f"--num-cpus={cpus}", f"--num-gpus={gpus}", *args],
                env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout: float = 180.0, *, tries: int = 3) -> None:
        """The head, then the workers one by one. A node whose raylet died at start (``bind: Address already in
        use``: a port picked free was taken before the raylet bound it, which happens on a busy machine) is killed
        and started again on new ports, up to ``tries`` times."""
        ports, gcs = _port_args(HEAD_IP, head=True)
        self.address = f"{HEAD_IP}:{gcs}"
        self._start("head", ["--head", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false",
                             f"--temp-dir={self.root / 'ray'}", *ports], cpus=2, gpus=0)
        nodes = self.wait_nodes(1, timeout)
        for i in range(self.workers):
            for attempt in range(1, tries + 1):
                ports, _ = _port_args(worker_ip(i), head=False)
                self._start(f"worker{i}", [f"--address={self.address}", f"--node-ip-address={worker_ip(i)}",
                                           *ports], cpus=self.gpus, gpus=self.gpus)
                try:
                    nodes = self.wait_nodes(2 + i, timeout / tries)
                    break
                except TimeoutError:
                    self.kill_worker(i)
                    if attempt == tries:
                        raise
                    print(f"  worker node {i} did not come up (see {self.logs}); again on new ports", flush=True)
        outside = [n["NodeManagerAddress"] for n in nodes if not n["NodeManagerAddress"].startswith("127.")]
        if outside:
            raise RuntimeError(f"Ray nodes not on loopback: {outside}")

    def nodes(self) -> list[dict[str, Any]]:
        """``ray.nodes()`` as seen by a short-lived driver on the head's address."""
        code = (f"import json, ray; ray.init(address={self.address!r}, _node_ip_address={HEAD_IP!r}, "
                "log_to_driver=False); print('NODES=' + json.dumps([{k: n[k] for k in "
                "('NodeManagerAddress', 'Alive', 'Resources')} for n in ray.nodes()]))")
        out = subprocess.run([PYTHON, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        for line in out.stdout.splitlines():
            if line.startswith("NODES="):
                return json.loads(line[len("NODES="):])
        raise RuntimeError(f"could not list nodes: {out.stderr[-2000:]}")

    def wait_nodes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            head = self.procs.get("head")
            if head is not None and head.poll() is not None:
                raise RuntimeError(f"ray head exited: {(self.logs / 'head.log').read_text()[-3000:]}")
            newest = list(self.procs.values())[-1]
            if newest is not head and newest.poll() is not None:
                raise TimeoutError(f"a worker node's `ray start` exited ({newest.returncode})")
            try:
                alive = [x for x in self.nodes() if x["Alive"]]
            except (RuntimeError, subprocess.TimeoutExpired):
                alive = []
            if len(alive) >= n:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {n} Ray nodes came up; logs in {self.logs} and {self.root}/ray")
            time.sleep(1.0)

    def kill_worker(self, i: int = 0) -> list[int]:
        """SIGKILL worker node ``i``: its raylet first (the node's death as Ray sees it), then the rest of its
        processes (trial workers, agents, the ``ray start`` process). Returns the PIDs killed."""
        proc = self.procs[f"worker{i}"]
        tree = descendants(proc.pid)  # before any kill: the raylet's children are re-parented once it dies
        raylets = [p for p in tree if _comm(p) == "raylet"]
        sigkill(raylets)
        rest = [p for p in [*tree, proc.pid] if p not in raylets and running(p)]
        sigkill(rest)
        return raylets + rest

    def stop(self) -> None:
        pids: set[int] = set()
        for proc in self.procs.values():
            pids.update([proc.pid, *descendants(proc.pid)])
        sigkill(sorted(pids))
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_marked(self.root)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Services:
    """PostgreSQL + an MLflow server on it (``tools/postgres.py``), restartable on the same port."""

    def __init__(self, out: Path, *, workers: int) -> None:
        from tools.postgres import start_mlflow_on_postgres, start_postgres

        self.out, self.workers = out, workers
        self.pg = start_postgres()
        try:
            self.server = start_mlflow_on_postgres(self.pg, artifacts_dir=out / "artifacts", workers=workers)
        except BaseException:
            self.pg.stop()
            raise
        self.backend = self.server.backend_store_uri
        self.url = self.server.url
        self.port = self.server.port

    def stop_mlflow(self) -> None:
        from more.tracking.store import stop_server

        stop_server(self.server)

    def start_mlflow(self) -> None:
        """The server again, on the same store and port."""
        from more.tracking.store import start_server

        self.server = start_server(self.backend, artifacts_dir=self.out / "artifacts", port=self.port,
                                   workers=self.workers, wait_s=300,
                                   log_path=self.out / f"mlflow-server-{self.port}-restarted.log")

    def stop(self) -> None:
        from more.tracking.store import stop_server

        try:
            stop_server(self.server)
        finally:
            self.pg.stop()
