"""The services of ``bench_scale.py``: PostgreSQL with an MLflow server on it, and a loopback Ray cluster of a head
and several worker nodes that declare GPUs they do not have.

Every process is started here with a private ``HOME`` and ``TMPDIR`` (a short folder under /tmp) and stopped by its
PID: the ``ray start --block`` processes and their descendants, then any process of this user whose environment
names that folder (only processes this benchmark started can carry it). The process bookkeeping is the tests'
(``tests/harness/loopback_cluster.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests" / "harness"))  # last: its light_trainer.py must not shadow bench/s
sys.path.insert(0, str(ROOT))

from loopback_cluster import LoopbackCluster  # noqa: E402


class ScaleCluster(LoopbackCluster):
    """A head on 127.0.0.2 with 2 CPUs and no GPU (it holds the driver's Tune actors only) and ``workers`` nodes on
    127.0.0.3, .4, ..., each declaring ``gpus`` GPUs and as many CPUs; token auth; fast node-death detection (a killed
    node is noticed in seconds, as a cluster tuned for preemptible nodes would). Started, retried on new ports and
    stopped by the tests' :class:`LoopbackCluster`."""

    def __init__(self, root: Path, token: str, *, workers: int, gpus: int, extra_env: dict[str, str],
                 logs: Path) -> None:
        super().__init__(root, token, cpus_per_node=gpus, workers=workers, gpus_per_node=gpus, head_cpus=2,
                         extra_env=extra_env, logs=logs)
        self.env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'bench'}"  # the light trainer is importable on every node

    def start(self, timeout: float = 180.0, *, tries: int = 3) -> list[dict[str, Any]]:
        return super().start(timeout, tries=tries)

    @property
    def slots(self) -> int:
        return self.workers * self.gpus


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
