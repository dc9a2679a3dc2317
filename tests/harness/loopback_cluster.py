"""Test helpers: a Ray cluster on loopback (head 127.0.0.2, workers 127.0.0.3, .4, ...) and process bookkeeping.

Every process is started by the test with a private ``HOME`` and ``TMPDIR`` (a short folder under /tmp), so all
of them, and everything they spawn, carry that folder in their environment. Stopping means SIGKILL by PID: the
PIDs come from the ``ray start --block`` processes, their descendants, and a scan of ``/proc`` for processes of
this user whose environment names the test's folder (which only processes started by this test can have).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
REPO = Path(__file__).resolve().parents[2]
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def short_dir(prefix: str = "mh-") -> Path:
    """A folder under /tmp with a short path (Ray's socket paths must stay under 107 characters)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def process_env(root: Path, *, token: str | None = None) -> dict[str, str]:
    """Environment for processes of one test: private HOME and TMPDIR, token auth when a token is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(root), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(REPO))
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(pid: int) -> list[int]:
    parents = {p: _ppid(p) for p in _all_pids()}
    out, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        out.extend(children)
        frontier = children
    return out


def marked_pids(marker: str) -> list[int]:
    """PIDs of this user's processes whose environment or command line contains ``marker`` (never our own)."""
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob:
            found.append(pid)
    return found


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the PID, it names one process (PIDs get reused)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sigkill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_marked(root: Path) -> list[int]:
    """SIGKILL every process carrying ``root`` and their descendants (Ray's agents overwrite their environment
    with their process title, so they are found as children of the raylet). Repeated: a dying raylet may still
    spawn a worker."""
    killed: list[int] = []
    for _ in range(5):
        marked = marked_pids(str(root))
        if not marked:
            break
        pids = sorted({*marked, *(d for pid in marked for d in descendants(pid))} - {os.getpid()})
        sigkill(pids)
        killed.extend(pids)
        time.sleep(0.3)
    return killed


def free_ports(host: str, n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_args(host: str, *, head: bool) -> tuple[list[str], int]:
    gcs, agent, grpc, env_agent, metrics, node_mgr, obj_mgr, low = free_ports(host, 8)
    args = [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 40}"]
    return ([f"--port={gcs}"] if head else []) + args, gcs


def worker_ip(i: int) -> str:
    """Worker node ``i``'s address: 127.0.0.3, .4, ..."""
    return f"127.0.0.{3 + i}"


def comm(pid: int) -> str:
    """The process's name ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class LoopbackCluster:
    """``ray start --block``: a head on 127.0.0.2 and ``workers`` worker nodes on 127.0.0.3, .4, ..., token auth,
    fast node-death detection (a killed node is noticed in seconds).

    Args:
        root: the processes' private HOME and TMPDIR (short: Ray's socket paths).
        cpus_per_node: CPUs each worker node declares (and the head, unless ``head_cpus`` is given).
        workers: worker nodes started by :meth:`start`.
        gpus_per_node: GPUs each worker node declares (the head declares none).
        extra_env: added to every process's environment.
        logs: where each node's ``ray start`` output goes (default: ``root``).
    """

    def __init__(self, root: Path, token: str, *, cpus_per_node: int = 1, workers: int = 1, gpus_per_node: int = 0,
                 head_cpus: int | None = None, extra_env: dict[str, str] | None = None,
                 logs: Path | None = None) -> None:
        self.root, self.token, self.workers = root, token, workers
        self.cpus, self.gpus = cpus_per_node, gpus_per_node
        self.head_cpus = cpus_per_node if head_cpus is None else head_cpus
        self.logs = logs or root
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = process_env(root, token=token)
        self.env.update(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                        RAY_health_check_failure_threshold="3", **(extra_env or {}))
        self.address = ""
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def head(self) -> subprocess.Popen | None:
        return self.procs.get("head")

    @property
    def worker(self) -> subprocess.Popen | None:
        return self.procs.get("worker0")

    def _start(self, name: str, args: list[str], *, cpus: int, gpus: int) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as fh:
            proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", f"--num-cpus={cpus}",
                                     f"--num-gpus={gpus}", *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_head(self, timeout: float = 120.0, *, tries: int = 3) -> list[dict]:
        """The head alone, started again on new ports when it does not come up (see :meth:`start`)."""
        for attempt in range(1, tries + 1):
            ports, gcs = _port_args(HEAD_IP, head=True)
            self.address = f"{HEAD_IP}:{gcs}"
            self._start("head", ["--head", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false",
                                 f"--temp-dir={self.root / 'ray'}", *ports], cpus=self.head_cpus, gpus=0)
            try:
                return self.wait_nodes(1, timeout / tries)
            except (TimeoutError, RuntimeError):
                self._kill_node("head")
                if attempt == tries:
                    raise
                print(f"  the Ray head did not come up (see {self.logs}); again on new ports", flush=True)
        raise AssertionError("unreachable")

    def start(self, timeout: float = 120.0, *, tries: int = 3) -> list[dict]:
        """The head, then the workers one by one. A node that does not come up (its raylet died at start with
        ``bind: Address already in use``: a port picked free was taken before it bound it, which happens on a busy
        machine) is killed and started again on new ports, up to ``tries`` times."""
        nodes = self.start_head(timeout, tries=tries)
        for i in range(self.workers):
            nodes = self.start_worker(i, timeout, tries=tries)
        outside = [n["NodeManagerAddress"] for n in nodes if not n["NodeManagerAddress"].startswith("127.")]
        if outside:
            raise RuntimeError(f"Ray nodes not on loopback: {outside}")
        return nodes

    def start_worker(self, i: int = 0, timeout: float = 120.0, *, tries: int = 3) -> list[dict]:
        """Worker node ``i`` (again, after :meth:`kill_worker`), retried on new ports like :meth:`start`."""
        alive = sum(1 for name, proc in self.procs.items() if name != f"worker{i}" and proc.poll() is None)
        for attempt in range(1, tries + 1):
            ports, _ = _port_args(worker_ip(i), head=False)
            self._start(f"worker{i}", [f"--address={self.address}", f"--node-ip-address={worker_ip(i)}", *ports],
                        cpus=self.cpus, gpus=self.gpus)
            try:
                return self.wait_nodes(alive + 1, timeout / tries, newest=f"worker{i}")
            except TimeoutError:
                self.kill_worker(i)
                if attempt == tries:
                    raise
                print(f"  worker node {i} did not come up (see {self.logs}); again on new ports", flush=True)
        raise AssertionError("unreachable")

    def nodes(self) -> list[dict]:
        """``ray.nodes()`` as seen by a short-lived driver on the head's address."""
        code = (f"import json, ray; ray.init(address={self.address!r}, _node_ip_address={HEAD_IP!r}, "
                "log_to_driver=False); print('NODES=' + json.dumps([{k: n[k] for k in "
                "('NodeManagerAddress', 'Alive', 'Resources')} for n in ray.nodes()]))")
        out = subprocess.run([PYTHON, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        for line in out.stdout.splitlines():
            if line.startswith("NODES="):
                return json.loads(line[len("NODES="):])
        raise RuntimeError(f"could not list nodes: {out.stderr[-2000:]}")

    def wait_nodes(self, n: int, timeout: float, *, newest: str | None = None) -> list[dict]:
        """The alive nodes once there are ``n``; a head that exits raises RuntimeError, and so does the ``newest``
        node's ``ray start`` exiting (TimeoutError: it can be started again)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.head is not None and self.head.poll() is not None:
                raise RuntimeError(f"ray head exited: {(self.logs / 'head.log').read_text()[-3000:]}")
            node = self.procs.get(newest or "")
            if node is not None and node.poll() is not None:
                raise TimeoutError(f"{newest}'s `ray start` exited ({node.returncode})")
            try:
                alive = [x for x in self.nodes() if x["Alive"]]
            except (RuntimeError, subprocess.TimeoutExpired):
                alive = []
            if len(alive) >= n:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {n} Ray nodes came up; logs in {self.logs} and {self.root}/ray")
            time.sleep(1.0)

    def raylet_pid(self, i: int = 0) -> int:
        """Worker node ``i``'s raylet."""
        proc = self.procs[f"worker{i}"]
        for pid in descendants(proc.pid):
            if comm(pid) == "raylet":
                return pid
        raise RuntimeError(f"worker node {i} has no raylet")

    def worker_raylet_pid(self) -> int:
        return self.raylet_pid(0)

    def worker_alive(self, i: int = 0) -> bool:
        proc = self.procs.get(f"worker{i}")
        return proc is not None and proc.poll() is None

    def _kill_node(self, name: str) -> list[int]:
        """SIGKILL one node: its raylet first (the node's death as Ray sees it), then the rest of its processes
        (workers, agents, the ``ray start`` process). Returns the PIDs killed."""
        proc = self.procs[name]
        tree = descendants(proc.pid)  # before any kill: the raylet's children are re-parented once it dies
        raylets = [p for p in tree if comm(p) == "raylet"]
        sigkill(raylets)
        rest = [p for p in [*tree, proc.pid] if p not in raylets and running(p)]
        sigkill(rest)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return raylets + rest

    def kill_worker(self, i: int = 0) -> list[int]:
        """SIGKILL worker node ``i`` (see :meth:`_kill_node`)."""
        return self._kill_node(f"worker{i}")

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


def ablate_command(spec: Path, storage: Path, *extra: str, reuse: bool = False) -> list[str]:
    """``python -m more ablate``; unless ``reuse``, with ``--rerun``: tests share one MLflow store per session, and
    a test about something else must train its trials, not reuse another test's identical ones."""
    rerun = [] if reuse or "--resume" in extra else ["--rerun"]
    return [PYTHON, "-m", "more", "ablate", str(spec), "--storage", str(storage), *rerun, *extra]


def trial_statuses(experiment_dir: Path) -> dict[str, str]:
    """Trial name -> status from Tune's newest experiment-state snapshot (no Ray needed)."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):
        return {}  # being rewritten
    out = {}
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0])
        out[state.get("custom_dirname") or state["trial_id"]] = state["status"]
    return out


def result_lines(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return lines


def tiny_overrides(data_root: Path, *, iters: int = 6, every: int = 3) -> dict:
    """A trial of a few seconds: vit_micro on 16 generated 64 px images."""
    return {
        "train.max_iters": iters, "train.eval_every": every, "train.ckpt_every": every, "train.log_every": every,
        "data.synth_train": 16, "data.synth_val": 8, "data.synth_image_size": 64, "data.crop_size": 64,
        "eval.resize": 64, "model.variant": "vit_micro", "train.batch_size": 4, "lir.ure_kernel": 2,
        "data.root": str(data_root),
    }


def write_spec(path: Path, name: str, conditions: dict, *, overrides: dict, seeds: list[int] = (0,),
               **extra) -> Path:
    """An ablation spec on the synthetic preset, one CPU per trial."""
    import yaml

    spec = {"name": name, "experiment": {"config": "synthetic", "overrides": overrides}, "conditions": conditions,
            "seeds": list(seeds), "resources": {"cpus": 1, "gpus": 0}, "metric": "val/cls_f1", "mode": "max",
            **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
