"""A throwaway PostgreSQL server on loopback, for the tests and benchmarks that need a real database.

``start_postgres()`` makes a fresh cluster in a private folder under /tmp (``initdb``), starts it on 127.0.0.1 and a
free port (``pg_ctl start``) and returns a :class:`PostgresServer`; ``create_database`` adds a role with a password
and a database it owns, and ``stop()`` stops the server (``pg_ctl stop -m fast``, then SIGKILL of the postmaster's
PID) and removes the folder. Local (socket) connections trust the OS user; TCP connections need the role's password
(scram-sha-256), so a test can check what a wrong password does.

PostgreSQL refuses to run as root: as root, the folder is handed to the ``postgres`` user and the server binaries run
through ``runuser -u postgres --``. :class:`PostgresUnavailable` says why a server cannot start here (no binaries, no
``postgres`` user); tests skip with that reason. Binaries: ``$MORE_PG_BIN``, else ``/usr/lib/postgresql/15/bin``.

:func:`start_mlflow_on_postgres` adds what ``cluster.yaml`` runs on the head: a database owned by a role named after
the OS user and an MLflow server with several workers reaching it over the Unix socket, without a password.

Used by ``tests/conftest.py`` (the ``postgres`` fixture) and importable from ``bench/`` scripts::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
    from tools.postgres import start_mlflow_on_postgres, start_postgres

    pg = start_postgres()
    server = start_mlflow_on_postgres(pg, artifacts_dir="/tmp/x/artifacts", workers=4)  # server.url: http://127...
    ...
    stop_server(server); pg.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG_BIN_ENV = "MORE_PG_BIN"
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
OS_USER = "postgres"  # who runs the server when this process is root


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started on this machine (the message says why)."""


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running throwaway server; ``pid`` is the postmaster's."""

    root: Path
    host: str
    port: int
    pid: int
    bin_dir: Path
    as_user: str | None  # the OS user the binaries run as (None: this process's own)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str, user: str, password: str | None = None, *, driver: str = "") -> str:
        """A SQLAlchemy URL, e.g. ``postgresql://user:pw@127.0.0.1:PORT/db`` (``driver`` ``psycopg2`` adds
        ``+psycopg2``); without ``password`` the client takes it from ``PGPASSWORD`` or a ``.pgpass`` file."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the server's socket; returns psql's unaligned output."""
        out = subprocess.run(
            self._as_user([str(self.bin_dir / "psql") if (self.bin_dir / "psql").exists() else "psql",
                           "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
                           "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql]),
            capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str, *, user: str, password: str) -> str:
        """A role ``user`` (login, ``password``) owning a new database ``name``; returns its URL without the
        password (see :meth:`url`)."""
        self.psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE \"{name}\" OWNER \"{user}\"")
        return self.url(name, user)

    def alive(self) -> bool:
        if self.pid <= 0:  # not started (kill(0, ...) would address this process's own group)
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, *, remove: bool = True) -> None:
        """``pg_ctl stop -m fast``; SIGKILL of the postmaster if it is still there; then the folder is removed."""
        if self.pid <= 0 or self.alive():  # pid 0: a start that failed may still have left a server
            subprocess.run(self._as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                          "-w", "-t", "30", "stop"]), capture_output=True, timeout=60)
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def _as_user(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.as_user, "--", *command] if self.as_user else command


def pg_bin() -> Path:
    return Path(os.environ.get(PG_BIN_ENV) or DEFAULT_PG_BIN)


def start_postgres(*, host: str = "127.0.0.1", port: int = 0, wait_s: float = 60.0) -> PostgresServer:
    """A fresh PostgreSQL cluster in a new folder under /tmp, started on ``host:port`` (0: a free port).

    Raises:
        PostgresUnavailable: no binaries, or running as root without a ``postgres`` user or ``runuser``.
        RuntimeError: initdb or the start failed (the server log is in the message).
    """
    bin_dir = pg_bin()
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (bin_dir / tool).is_file():
            raise PostgresUnavailable(f"no PostgreSQL binaries in {bin_dir} (set ${PG_BIN_ENV}, or install "
                                      f"Debian's postgresql)")
    as_user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(f"running as root and there is no '{OS_USER}' user to run PostgreSQL as") \
                from None
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root and `runuser` is missing (needed to run PostgreSQL as "
                                      f"'{OS_USER}')")
        as_user = OS_USER
    root = Path(tempfile.mkdtemp(prefix="more-pg-", dir="/tmp"))  # short: the socket path must stay < 107 chars
    if as_user:
        entry = pwd.getpwnam(as_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = port or _free_port(host)
    server = PostgresServer(root, host, port, 0, bin_dir, as_user)
    run = subprocess.run(server._as_user([str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres",
                                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                          "--no-sync"]),
                         capture_output=True, text=True, timeout=120, cwd=root)
    if run.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
    options = f"-c listen_addresses={host} -p {port} -k {root} -c fsync=off -c max_connections=200"
    run = subprocess.run(server._as_user([str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-o", options,
                                          "-l", str(server.log_path), "-w", "-t", str(int(wait_s)), "start"]),
                         capture_output=True, text=True, timeout=wait_s + 30, cwd=root)
    pid_file = server.data_dir / "postmaster.pid"
    if run.returncode != 0 or not pid_file.is_file():
        log = server.log_path.read_text(errors="replace")[-2000:] if server.log_path.is_file() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start ({run.returncode}): {run.stderr.strip()}\n{log}")
    server.pid = int(pid_file.read_text().splitlines()[0])
    return server


def socket_url(server: PostgresServer, database: str) -> str:
    """The URL of ``database`` over the server's Unix socket as the OS user (``cluster.yaml``'s form)."""
    return f"postgresql:///{database}?host={server.root}&port={server.port}"


def start_mlflow_on_postgres(server: PostgresServer, *, artifacts_dir: str | os.PathLike, database: str = "mlflow",
                             workers: int = 2, host: str = "127.0.0.1", port: int = 0) -> object:
    """A database ``database`` owned by a role named after this process's OS user (made if missing), and an
    ``mlflow server`` on it with ``workers`` workers (:func:`more.tracking.store.start_server`; stop it with
    ``stop_server``)."""
    import getpass

    from more.tracking.store import start_server

    user = getpass.getuser()
    if not server.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'").strip():
        server.psql(f'CREATE ROLE "{user}" LOGIN')
    if not server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'").strip():
        server.psql(f'CREATE DATABASE "{database}" OWNER "{user}"')
    return start_server(socket_url(server, database), artifacts_dir=artifacts_dir, host=host, port=port,
                        workers=workers, wait_s=300)
