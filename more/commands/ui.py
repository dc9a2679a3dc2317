"""``python -m more ui [--tracking-uri URI] [--port 5000] [--host 127.0.0.1] [--allow-remote]``.

Starts the MLflow UI (a lean ``mlflow server``: one worker, no job runner, telemetry off) over the tracking store,
bound to 127.0.0.1 unless ``--allow-remote``, prints its URL and the runs page of each experiment (MLflow 3's landing
page opens on its GenAI overview, not on the runs), opened in a saved view that lists the trials with the spec's
metric (more/tracking/views.py), and serves until Ctrl-C or SIGTERM, then stops the server's process group by its PID.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from more.tracking.store import DEFAULT_UI_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="the store to show: sqlite:////abs/mlflow.db, a folder or *.db path "
                             "(default: $MLFLOW_TRACKING_URI, else the embedded store work/mlflow/mlflow.db)")
    parser.add_argument("--port", type=int, default=DEFAULT_UI_PORT,
                        help=f"port to serve on (default {DEFAULT_UI_PORT}; 0 = a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (the UI has no authentication: anyone who can reach the "
                             "port can read and change every run)")


def run(args: argparse.Namespace) -> int:
    from more.tracking.store import (
        ARTIFACTS_DIR,
        TrackingError,
        is_loopback,
        is_server,
        port_in_use,
        sqlite_path,
        start_server,
        stop_server,
    )

    if not is_loopback(args.host) and not args.allow_remote:
        print(f"refusing to bind the MLflow UI to {args.host}: it has no authentication. Use the default "
              f"127.0.0.1 (and an SSH tunnel to reach it), or pass --allow-remote.", file=sys.stderr)
        return 2
    from more.preflight import PreflightError, tracking_uri

    if not 0 <= args.port <= 65535:
        raise PreflightError(f"--port {args.port}: must be a port number in 0..65535 (0 picks a free one)")
    uri, _ = tracking_uri(args.tracking_uri)  # a server must answer; a sqlite file must be a database
    if is_server(uri):
        print(f"the tracking store is already a server: open {uri} in a browser")
        print_experiment_pages(uri, uri)
        return 0
    db = sqlite_path(uri)
    if db is None:
        print(f"tracking URI {uri}: `more ui` serves a sqlite store; for another database run "
              f"`mlflow server --backend-store-uri {uri}` yourself", file=sys.stderr)
        return 2
    if args.port and port_in_use(args.host, args.port):
        print(f"port {args.port} on {args.host} is in use: pass another --port (0 picks a free one)", file=sys.stderr)
        return 2

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on_signal)
    artifacts = Path(db).parent / ARTIFACTS_DIR
    print(f"starting the MLflow UI over {uri} ...", flush=True)
    server = None
    try:
        server = start_server(uri, artifacts_dir=artifacts, host=args.host, port=args.port,
                              log_path=Path(db).parent / "mlflow-ui.log")
        print(f"MLflow UI: {server.url}  (server pid {server.pid}, log {server.log_path}; Ctrl-C to stop)", flush=True)
        print_experiment_pages(uri, server.url)
        return int(server.process.wait() or 0)
    except TrackingError as exc:
        print(f"tracking error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the MLflow UI", flush=True)
        return 0
    finally:
        if server is not None:
            stop_server(server)


def print_experiment_pages(uri: str, ui_url: str) -> None:
    """One line per experiment of the store with the link to its runs table."""
    from more.tracking.store import experiment_pages

    try:
        pages, more = experiment_pages(uri, ui_url)
    except Exception as exc:  # noqa: BLE001 -- the links are a convenience: the UI serves without them
        print(f"(could not list the experiments: {type(exc).__name__}: {exc})", flush=True)
        return
    if pages:
        print("runs of each experiment:", flush=True)
    for name, url in pages:
        print(f"  {name}: {url}", flush=True)
    if more:
        print(f"  ... and {more} older experiment(s): see {ui_url}/#/experiments", flush=True)
