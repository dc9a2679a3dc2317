"""Checks every command runs before it starts Ray, opens a study or writes anything.

Each check either returns a short line saying what it found (``--dry-run`` prints them) or raises
:class:`PreflightError` naming the flag, file or key at fault. Nothing here writes: folders that do not exist yet are
judged by their nearest existing parent. Network checks (a tracking server, a Ray address) give up after
:data:`PROBE_TIMEOUT_S` seconds, so a wrong address costs seconds, not a silent hang.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 3.0
SQLITE_MAGIC = b"SQLite format 3\x00"
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


class PreflightError(ValueError):
    """Bad input found before any work started; the message names the flag, file or key."""


@dataclass
class Checked:
    """What a preflight looked at, one line per check (printed by ``--dry-run``)."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> str:
        self.lines.append(line)
        return line

    def text(self) -> str:
        return "".join(f"  ok  {line}\n" for line in self.lines)


# ------------------------------------------------------------------------------------------------- paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_dir(path: str | os.PathLike, what: str) -> str:
    """A folder the command will create or write into: not a file, and creatable/writable by this user."""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise PreflightError(f"{what} {p}: is a file, expected a folder")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise PreflightError(f"{what} {p}: {base} is a file, so the folder cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PreflightError(f"{what} {p}: {base} is not writable")
    return f"{what} {p} ({'exists' if p.exists() else 'will be created'}, writable)"


def input_file(path: str | os.PathLike, what: str) -> str:
    """A file the command reads: present, a file, readable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PreflightError(f"{what} {p}: does not exist")
    if p.is_dir():
        raise PreflightError(f"{what} {p}: is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise PreflightError(f"{what} {p}: is not readable")
    return f"{what} {p} (readable)"


def input_dir(path: str | os.PathLike, what: str) -> str:
    """A folder the command reads: present, a folder, readable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PreflightError(f"{what} {p}: does not exist")
    if not p.is_dir():
        raise PreflightError(f"{what} {p}: is a file, expected a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise PreflightError(f"{what} {p}: is not readable")
    return f"{what} {p} (readable)"


def config_paths(cfg: Any, where: str = "", *, weights: bool = True, splits: dict[str, str] | None = None) -> str:
    """The dataset root, labels file and (with ``weights``) the pretrained weights file of a config must exist and
    be readable; a synthetic set generated on first use needs a creatable root. ``where`` (e.g. a trial name)
    starts the message.

    Then what they hold (:func:`more.input_checks.dataset_inputs`): the ``splits`` read (by key; default: the
    training splits when ``weights`` is set, i.e. a config that trains, else none) have their lists, the labels
    file parses and covers them, the training split holds a batch, and the weights load into the backbone."""
    from more.config.load import WEIGHT_SUFFIXES

    root = Path(cfg.data.root)
    generated = cfg.data.dataset == "synthetic" and cfg.data.synth_generate
    if generated and not root.is_dir():
        output_dir(root, f"{where}data.root (a synthetic set generated on first use)")
    elif not root.is_dir():
        raise PreflightError(f"{where}data.root={cfg.data.root!r}: " + ("is a file, expected a folder" if root.exists()
                                                                       else "folder does not exist"))
    files = [("data.labels_file", cfg.data.labels_file)]
    w = cfg.model.pretrained
    if weights and w and (os.sep in w or w.endswith(WEIGHT_SUFFIXES)):  # else a model name the loader resolves
        files.append(("model.pretrained", w))
    for key, value in files:
        if not value:
            continue
        p = Path(value).expanduser()
        if not p.is_file():
            raise PreflightError(f"{where}{key}={value!r}: " + ("is a folder, expected a file" if p.is_dir()
                                                                else "file does not exist"))
        if not os.access(p, os.R_OK):
            raise PreflightError(f"{where}{key}={value!r}: file is not readable")
    from more.input_checks import dataset_inputs

    if weights or splits:
        dataset_inputs(cfg, splits=splits, weights=weights, where=where)
    return f"data.root {cfg.data.root}" + (f", weights {w}" if weights and w else "")


def device_available(device: str) -> str:
    """``runtime.device`` (already a valid name) must exist on this machine."""
    if not device.startswith("cuda"):
        return f"runtime.device {device}"
    count = local_gpus()
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= count:
        raise PreflightError(f"runtime.device={device!r}: this machine has {count} CUDA device(s)"
                             + ("" if count else "; use runtime.device=cpu or auto"))
    return f"runtime.device {device} (of {count} CUDA devices)"


def _sqlite_file(path: Path, what: str) -> None:
    """A sqlite database file: absent (created), empty, or a real database; never a folder or another file."""
    if path.is_dir():
        raise PreflightError(f"{what} {path}: is a folder, expected a sqlite database file")
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise PreflightError(f"{what} {path}: exists and is not a sqlite database; refusing to write into it")
        if not os.access(path, os.R_OK | os.W_OK):
            raise PreflightError(f"{what} {path}: is not readable and writable")
    else:
        output_dir(path.parent, what)


# ---------------------------------------------------------------------------------------------- network


def _connect(host: str, port: int, what: str, value: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except TimeoutError:
        raise PreflightError(f"{what} {value}: no answer within {PROBE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise PreflightError(f"{what} {value}: cannot connect ({exc.strerror or exc})") from None


def _host_port(text: str, what: str, value: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PreflightError(f"{what} {value}: expected HOST:PORT with a port in 1..65535")
    return host.strip("[]"), int(port)


def http_answers(url: str, what: str) -> None:
    """An http(s) server must answer (any HTTP status) within the probe timeout."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):  # noqa: S310 -- http(s)
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PreflightError(f"{what} {url}: the server did not answer within {PROBE_TIMEOUT_S:g} s "
                             f"({reason})") from None


def tracking_uri(value: str | None, what: str = "--tracking-uri", *, probe: bool = True) -> tuple[str, str]:
    """The resolved MLflow tracking URI and a line on it: a known scheme, a usable sqlite file, and (with
    ``probe``) a server that answers."""
    from more.database import DatabaseError, check_database, redact
    from more.tracking.store import TrackingError, resolve_tracking_uri, sqlite_path

    try:
        uri = resolve_tracking_uri(value)
    except TrackingError as exc:
        raise PreflightError(f"{what}: {exc}") from None
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(f"{what} {redact(uri)}: unknown scheme '{scheme}' (use a path, "
                             f"sqlite:////abs/mlflow.db or http://server:port)")
    db = sqlite_path(uri)
    if db is not None:
        _sqlite_file(db, what)
        return uri, f"{what} {uri} (sqlite {'exists' if db.exists() else 'will be created'})"
    if scheme in ("http", "https") and probe:
        http_answers(uri, f"{what}: tracking server")
        return uri, f"{what} {uri} (server answers)"
    if scheme == "postgresql" and probe:  # i21pg: a store written directly: it must answer, password never shown
        try:
            return uri, check_database(uri, what)
        except DatabaseError as exc:
            raise PreflightError(str(exc)) from None
    return uri, f"{what} {redact(uri)}"


def ray_address(address: str | None) -> str:
    """``--address``: a Ray cluster's GCS must accept a connection within the probe timeout."""
    if address is None:
        return "Ray: a private local Ray on 127.0.0.2 (started after these checks)"
    value = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or ""
        current = Path("/tmp/ray/ray_current_cluster")
        if not address and current.is_file():
            address = current.read_text().strip()
        if not address:
            raise PreflightError("--address auto: no running Ray cluster found on this machine (no RAY_ADDRESS, no "
                                 "/tmp/ray/ray_current_cluster); give HOST:PORT")
    if address.startswith("ray://"):
        address = address[len("ray://"):]
    host, port = _host_port(address, "--address", value)
    _connect(host, port, "--address", value)
    return f"--address {value} (Ray GCS {host}:{port} accepts connections)"


# ----------------------------------------------------------------------------------------------- storage


def optuna_storage(where: str, what: str = "--storage") -> str:
    """An Optuna storage: a journal file (new, or one Optuna wrote) or an RDB URL whose driver is installed and, for
    a server (PostgreSQL), that answers with the URL's credentials. Messages never show the URL's password."""
    if "://" in where:
        from more.database import DatabaseError, check_database, redact

        shown = redact(where)
        scheme = where.split("://", 1)[0]
        dialect = scheme.split("+", 1)[0].lower()
        if dialect not in STORAGE_SCHEMES:
            raise PreflightError(f"{what} {shown}: unknown database '{scheme}' (a journal file path, or "
                                 f"{', '.join(s + '://' for s in STORAGE_SCHEMES)})")
        if dialect != "sqlite":  # i21pg: a server must answer, with these credentials, before any work starts
            try:
                return check_database(where, what)
            except DatabaseError as exc:
                raise PreflightError(str(exc)) from None
        try:
            from sqlalchemy.engine import make_url

            url = make_url(where)
            url.get_dialect().import_dbapi()
        except ImportError as exc:
            raise PreflightError(f"{what} {shown}: the database driver for '{scheme}' is not installed "
                                 f"({exc})") from None
        except Exception as exc:  # noqa: BLE001 -- sqlalchemy's errors for a bad URL or an unknown driver vary
            raise PreflightError(f"{what} {shown}: not a usable database URL ({type(exc).__name__}: {exc})") from None
        if dialect == "sqlite" and url.database:
            _sqlite_file(Path(url.database).expanduser().absolute(), what)
        return f"{what} {shown} (database driver installed)"
    p = Path(where).expanduser().absolute()
    if p.is_dir():
        raise PreflightError(f"{what} {p}: is a folder, expected an Optuna journal file (e.g. {p}/study.journal)")
    if p.exists():
        if not is_journal(p):
            raise PreflightError(f"{what} {p}: exists and is not an Optuna journal; refusing to append to it "
                                 f"(give a new file name)")
        if not os.access(p, os.R_OK | os.W_OK):
            raise PreflightError(f"{what} {p}: is not readable and writable")
        return f"{what} {p} (Optuna journal)"
    output_dir(p.parent, what)
    return f"{what} {p} (new Optuna journal)"


def is_journal(path: Path) -> bool:
    """An empty file, or one whose first line is an Optuna journal record (a JSON object with ``op_code``)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
    except OSError:
        return False
    if not first.strip():
        return path.stat().st_size == 0
    try:
        record = json.loads(first)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "op_code" in record


# --------------------------------------------------------------------------------------------- resources


def local_gpus() -> int:
    """GPUs this machine offers a local Ray (CUDA_VISIBLE_DEVICES respected)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_resources(resources: Any, *, what: str = "resources", cpus: int | None = None) -> str:
    """A trial (or its DDP workers together) must fit this machine before a local Ray is started for it.

    Args:
        resources: :class:`more.harness.spec.Resources`.
        cpus: the CPUs the local Ray will offer (default: all cores).
    """
    have_cpu = cpus if cpus is not None else (os.cpu_count() or 1)
    need_cpu = resources.cpus * resources.workers
    need_gpu = resources.gpus
    have_gpu = local_gpus() if need_gpu > 0 else 0
    if need_cpu > have_cpu or need_gpu > have_gpu:
        per = f"{resources.workers} DDP workers x " if resources.workers > 1 else ""
        raise PreflightError(f"{what}: a trial needs {per}{resources.cpus:g} CPU and {need_gpu:g} GPU in all, but "
                             f"this machine offers the local Ray {have_cpu:g} CPU and {have_gpu} GPU; lower "
                             f"'resources' in the spec or run on a cluster with --address")
    return f"{what}: a trial needs {need_cpu:g} CPU, {need_gpu:g} GPU; the local machine has {have_cpu:g} CPU"


def cluster_problem(resources: Any, nodes: list[dict[str, Any]]) -> str:
    """Why no node set of a connected cluster can ever hold one trial ('' when it fits).

    Args:
        resources: :class:`more.harness.spec.Resources`.
        nodes: ``ray.nodes()`` (alive ones are counted).
    """
    need = {"CPU": resources.cpus, "GPU": resources.gpus} if resources.workers == 1 else resources.per_worker()
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    # how many trial processes (the trial itself, or one DDP worker) each node can hold
    fits = [min(int(have.get(k, 0.0) // v) for k, v in need.items() if v > 0) for have in alive]
    if sum(fits) >= resources.workers:
        return ""
    have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in alive) or "no nodes"
    if resources.workers == 1:
        return f"no node can hold a trial of {resources.cpus:g} CPU and {resources.gpus:g} GPU (nodes: {have})"
    return (f"the cluster cannot hold {resources.workers} DDP workers of {need['CPU']:g} CPU and {need['GPU']:g} GPU "
            f"(nodes: {have})")


def cluster_refusal(resources: Any, *, embedded: bool) -> str:
    """Right after connecting, before any trial is submitted: a trial no node can ever hold would wait forever.
    On a local Ray that is the refusal returned; on a cluster only a warning on stderr ('' returned), since its
    autoscaler may still add such nodes."""
    import ray

    text = cluster_problem(resources, ray.nodes())
    if not text:
        return ""
    if embedded:
        return f"{text}; lower 'resources' in the spec or run on a cluster with --address"
    print(f"warning: {text}; waiting for the cluster's autoscaler", file=sys.stderr, flush=True)
    return ""
