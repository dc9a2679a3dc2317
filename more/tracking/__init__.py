"""MLflow tracking: an adapter that mirrors each run folder into an MLflow store (only this package imports mlflow).

- :mod:`more.tracking.store`: tracking URIs (embedded sqlite default, ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``),
  experiments, and a lean local ``mlflow server`` (sqlite or PostgreSQL behind it) for tests and clusters.
- :mod:`more.tracking.runs`: the run schema (tags, trial keys, params) and idempotent run creation.
- :mod:`more.tracking.launch_run`: :class:`LaunchTracker`, the parent run per spec hash (driver side).
- :mod:`more.tracking.trial_run`: :class:`TrialTracker`, the child run per trial, continued on retry/resume; it
  records into the run folder's outbox (:mod:`more.tracking.outbox`) and a background sender
  (:mod:`more.tracking.sender`) syncs the run (:mod:`more.tracking.sync`), so the training loop never waits on MLflow.
- :mod:`more.tracking.reconcile`: :func:`reconcile`, the driver's catch-up of every trial run after a launch.
- :mod:`more.tracking.tables`, :mod:`more.tracking.pictures`: per-class tables and the picture grid (no MLflow).

Importing this package does not import mlflow; the functions do, when called.
"""

from more.tracking.launch_run import LaunchTracker
from more.tracking.reconcile import Reconciled, reconcile
from more.tracking.runs import error_text, find_or_create_run, flat_params, trial_key, trial_tags
from more.tracking.store import (
    MlflowServer,
    TrackingError,
    default_store_dir,
    resolve_tracking_uri,
    start_server,
    stop_server,
)
from more.tracking.trial_run import TrialTracker, log_remote_probe

__all__ = [
    "LaunchTracker", "MlflowServer", "Reconciled", "TrackingError", "TrialTracker", "default_store_dir",
    "error_text", "find_or_create_run", "flat_params", "log_remote_probe", "reconcile", "resolve_tracking_uri",
    "start_server", "stop_server", "trial_key", "trial_tags",
]
