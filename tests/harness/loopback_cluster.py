"""Test helpers: a two-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3) and process bookkeeping.

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


class LoopbackCluster:
    """``ray start --block`` head on 127.0.0.2 and worker on 127.0.0.3, one CPU each, token auth."""

    def __init__(self, root: Path, token: str, *, cpus_per_node: int = 1) -> None:
        self.root = root
        self.token = token
        self.env = process_env(root, token=token)
        # faster node-death detection than the defaults (tens of seconds) for the raylet-kill test
        self.env.update(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                        RAY_health_check_failure_threshold="3")
        self.cpus = cpus_per_node
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.address = ""
        self.tracked: set[int] = set()

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.root / log, "ab") as fh:
            proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", f"--num-cpus={self.cpus}",
                                     "--num-gpus=0", *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.tracked.add(proc.pid)
        return proc

    def start(self, timeout: float = 120.0) -> None:
        ports, gcs = _port_args(HEAD_IP, head=True)
        self.address = f"{HEAD_IP}:{gcs}"
        self.head = self._start(["--head", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false",
                                 f"--temp-dir={self.root / 'ray'}", *ports], "head.log")
        self.wait_nodes(1, timeout)
        self.start_worker(timeout)

    def start_worker(self, timeout: float = 120.0) -> None:
        ports, _ = _port_args(WORKER_IP, head=False)
        self.worker = self._start([f"--address={self.address}", f"--node-ip-address={WORKER_IP}", *ports],
                                  "worker.log")
        self.wait_nodes(2, timeout)

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

    def wait_nodes(self, n: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            for proc in (self.head, self.worker):
                if proc is not None and proc.poll() is not None and proc is self.head:
                    raise RuntimeError(f"ray head exited: {(self.root / 'head.log').read_text()[-3000:]}")
            try:
                alive = [x for x in self.nodes() if x["Alive"]]
            except (RuntimeError, subprocess.TimeoutExpired):
                alive = []
            if len(alive) >= n:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {n} Ray nodes came up")
            time.sleep(1.0)

    def worker_raylet_pid(self) -> int:
        assert self.worker is not None
        for pid in descendants(self.worker.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        raise RuntimeError("the worker node has no raylet")

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def stop(self) -> None:
        pids = set(self.tracked)
        for pid in self.tracked:
            pids.update(descendants(pid))
        sigkill(sorted(pids))
        for proc in (self.head, self.worker):
            if proc is not None:
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
