"""Where runs are tracked: the tracking URI, experiments, and a lean MLflow server for tests and clusters.

- Default store: an embedded sqlite database ``<repo>/work/mlflow/mlflow.db`` with artifacts in
  ``<repo>/work/mlflow/artifacts`` (MLflow 3.17 refuses the old ``file:``/``mlruns`` store by default).
  ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override it; a plain folder or ``*.db`` path means a sqlite store there.
- Experiments are made with :class:`~mlflow.MlflowClient` only, never ``mlflow.set_experiment`` (in a Ray driver
  it sets ``MLFLOW_EXPERIMENT_ID``, which then overrides every trial's experiment).
- A server (``mlflow server --workers 1`` with job execution off, ~0.5 GB instead of ~3 GB) binds to 127.0.0.1,
  runs in its own process group and is stopped by that group's id, which is its PID.
- Links: MLflow 3's UI opens on its GenAI pages, so ``more ui`` and ``ablate`` print each experiment's runs table,
  ``<ui>/#/experiments/<id>/runs?viewStateShareKey=more-trials`` (:func:`runs_page_url`), opened in a saved view
  that lists the trials with the spec's metric (:mod:`more.tracking.views`).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.privacy import telemetry_env
from more.tracking.views import SHARE_PARAM

URI_ENV = "MLFLOW_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
# The MLflow UI opens an experiment on its GenAI pages unless the experiment says it holds model-training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
DEFAULT_UI_PORT = 5000  # `more ui`'s default --port


class TrackingError(RuntimeError):
    """A tracking URI that cannot work, or a server that did not come up."""


def repo_root() -> Path:
    """The checkout holding this package (editable install), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def default_store_dir() -> Path:
    return repo_root() / "work" / "mlflow"


def sqlite_uri(path: str | os.PathLike) -> str:
    """``sqlite:///ABS`` for a database file, or for ``DIR/mlflow.db`` when ``path`` is a folder."""
    p = Path(path).expanduser().resolve()
    if p.suffix != ".db":
        p = p / DB_FILE
    return f"sqlite:///{p}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite store.

    A value without a scheme is a path: a ``*.db`` file or a folder (its ``mlflow.db``), made absolute.

    Raises:
        TrackingError: a ``file:`` store (refused by MLflow 3.17) or a relative ``sqlite:`` path.
    """
    chosen = uri or os.environ.get(URI_ENV) or ""
    if not chosen:
        return sqlite_uri(default_store_dir())
    if chosen.startswith("file:"):
        raise TrackingError(f"tracking URI {chosen!r}: the file store is refused by MLflow 3.17; use a sqlite store "
                            f"(a folder path or sqlite:////abs/path/mlflow.db) or an http:// tracking server")
    if "://" not in chosen:
        return sqlite_uri(chosen)
    if chosen.startswith("sqlite://") and not chosen.startswith("sqlite:////") and chosen != "sqlite://":
        raise TrackingError(f"tracking URI {chosen!r}: give the sqlite database as an absolute path, "
                            f"sqlite:////abs/path/mlflow.db (four slashes), or pass a plain path")
    return chosen


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///ABS`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: ``file://<db folder>/artifacts`` for a sqlite store; None for a
    server (it proxies uploads to its ``--artifacts-destination``, so remote workers need no shared disk)."""
    db = sqlite_path(uri)
    return (db.parent / ARTIFACTS_DIR).as_uri() if db is not None else None


def make_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri`` (creating the sqlite file's folder); the run-URL lines MLflow prints on every
    run end are switched off unless the environment asks for them."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    _drop_telemetry_client()
    return MlflowClient(tracking_uri=uri, registry_uri=uri if db is not None else None)


def _drop_telemetry_client() -> None:
    """Stop MLflow's usage events when ``mlflow`` was imported before ``more`` (a notebook): MLflow made its
    telemetry client at import, before ``more`` switched telemetry off (more/privacy.py): stop it without sending
    what it queued, and re-run MLflow's own set-up, which leaves no client once the environment says so."""
    try:
        from mlflow.telemetry.client import get_telemetry_client, set_telemetry_client
        from mlflow.telemetry.utils import is_telemetry_disabled
    except ImportError:  # an MLflow without telemetry (< 3.2) or with another layout: nothing to drop
        return
    client = get_telemetry_client()
    if client is not None and is_telemetry_disabled():
        client.flush(terminate=True)  # terminate: stop the sender threads and drop the queue
        set_telemetry_client()


def get_or_create_experiment(client: Any, name: str, *, uri: str, tags: dict[str, str] | None = None) -> str:
    """The id of experiment ``name``, created (with its artifact location and tags) or restored if deleted."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        root = artifact_root(uri)
        location = f"{root}/{name}" if root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={**EXPERIMENT_KIND, **(tags or {})})
        except MlflowException:  # another process created it between the two calls
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def runs_page_url(ui_url: str, experiment_id: str, view: str | None = None) -> str:
    """The MLflow UI page with an experiment's runs table (the UI routes after ``#``; MLflow 3.17's landing page and
    its experiment list open on the GenAI overview instead), opened in a saved view when one is given.

    Args:
        ui_url: where the UI is served, e.g. ``http://127.0.0.1:5000`` (an ``http(s)://`` tracking URI is one).
        experiment_id: the experiment's id.
        view: the id of a saved view of the experiment (:func:`more.tracking.views.save_trials_view`).
    """
    url = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?{SHARE_PARAM}={urllib.parse.quote(view)}" if view else url


def runs_page_text(uri: str, experiment_id: str, view: str | None = None) -> str:
    """Where to see an experiment's runs: the link on a tracking server; for a sqlite store the link that
    ``python -m more ui`` serves on its default port, with the command that starts it."""
    if is_server(uri):
        return f"MLflow runs: {runs_page_url(uri, experiment_id, view)}"
    try:
        store = "" if uri == resolve_tracking_uri(None) else f" --tracking-uri {uri}"  # `more ui`'s own default
    except TrackingError:
        store = f" --tracking-uri {uri}"
    return (f"MLflow runs: {runs_page_url(f'http://127.0.0.1:{DEFAULT_UI_PORT}', experiment_id, view)} once "
            f"`python -m more ui{store}` serves the store")


def experiment_pages(uri: str, ui_url: str, *, limit: int = 10) -> tuple[list[tuple[str, str]], int]:
    """``([(experiment name, runs page URL)], how many more)`` of the store's active experiments, most recently
    created first, the empty ``Default`` experiment left out. Each page opens in the experiment's trials view,
    saved (or updated) here; an experiment whose view cannot be saved gets the plain runs page."""
    from mlflow.entities import ViewType

    from more.tracking.views import save_trials_view

    client = make_client(uri)
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                            order_by=["creation_time DESC", "experiment_id DESC"])
    shown = [e for e in experiments if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]
    pages = []
    for e in shown[:limit]:
        try:
            view = save_trials_view(client, e.experiment_id)
        except Exception:  # noqa: BLE001 -- the view is a convenience: the plain runs page still shows the runs
            view = None
        pages.append((e.name, runs_page_url(ui_url, e.experiment_id, view)))
    return pages, max(0, len(shown) - limit)


# ------------------------------------------------------------------------------------------------- server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``pid`` is also its process group id."""

    process: subprocess.Popen
    url: str
    host: str
    port: int
    backend_store_uri: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def server_command(backend_store_uri: str, *, artifacts_dir: str | os.PathLike, host: str, port: int,
                   workers: int = 1) -> list[str]:
    # this interpreter, not the `mlflow` script beside it: the script's #! line may name another environment
    # (a copied venv), whose packages (e.g. the PostgreSQL driver) differ
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
            "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(Path(artifacts_dir).resolve()),
            "--workers", str(workers)]


def start_server(
    backend_store_uri: str,
    *,
    artifacts_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    log_path: str | os.PathLike | None = None,
    wait_s: float = 180.0,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> MlflowServer:
    """Start a lean ``mlflow server`` in its own process group and wait until ``/health`` answers.

    Args:
        backend_store_uri: e.g. ``sqlite:////abs/mlflow.db``, or ``postgresql://user@host:5432/db`` (with the
            password in ``env``'s ``PGPASSWORD`` or a ``~/.pgpass``, so that it is in no command line or log).
        artifacts_dir: where proxied artifact uploads go (``--artifacts-destination``).
        host: the interface to bind (loopback unless the caller decided otherwise).
        port: 0 picks a free port.
        log_path: the server's stdout+stderr (default: ``<artifacts_dir>/../mlflow-server-<port>.log``).
        wait_s: how long to wait for ``/health``; the server is stopped and an error raised after that.
        workers: server worker processes (1 for ``more ui`` and sqlite; several on PostgreSQL, which takes concurrent
            writers: each worker serves requests on its own).
        env: extra environment for the server (e.g. ``PGPASSWORD``).
    """
    port = port or free_port(host)
    Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    db = sqlite_path(backend_store_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else Path(artifacts_dir).resolve().parent / f"mlflow-server-{port}.log"
    server_env = {**os.environ, **telemetry_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    server_env.pop(URI_ENV, None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            server_command(backend_store_uri, artifacts_dir=artifacts_dir, host=host, port=port, workers=workers),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env, start_new_session=True,
        )
    shown = f"[{host}]" if ":" in host else host
    server = MlflowServer(process, f"http://{shown}:{port}", host, port, backend_store_uri, log)
    try:
        wait_healthy(server, wait_s)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_healthy(server: MlflowServer, wait_s: float) -> None:
    """Poll ``/health`` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + wait_s
    while True:
        code = server.process.poll()
        if code is not None:
            raise TrackingError(f"mlflow server exited with {code} before answering; log {server.log_path}:\n"
                                f"{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TrackingError(f"mlflow server at {server.url} did not answer /health within {wait_s:.0f} s; "
                                f"log {server.log_path}:\n{server.log_tail()}")
        time.sleep(0.5)


def stop_server(server: MlflowServer, *, grace_s: float = 10.0) -> int | None:
    """Stop the server's process group (SIGTERM, then SIGKILL after ``grace_s``); returns its exit code."""
    return stop_process_group(server.process, grace_s=grace_s)


def stop_process_group(process: subprocess.Popen, *, grace_s: float = 10.0) -> int | None:
    """Stop a process started with ``start_new_session=True`` and everything in its group, by its PID."""
    pgid = process.pid  # a session leader's group id is its PID
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(pgid):
            break
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    return process.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
