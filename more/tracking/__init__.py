"""MLflow tracking: an adapter that mirrors each run folder into an MLflow store (only this package imports mlflow).

- :mod:`more.tracking.store`: tracking URIs (embedded sqlite default, ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``),
  experiments, and a lean local ``mlflow server`` for tests and clusters.
- :mod:`more.tracking.runs`: :class:`LaunchTracker` (parent run per spec hash) and :class:`TrialTracker` (child run
  per trial, continued on retry/resume).
- :mod:`more.tracking.tables`, :mod:`more.tracking.pictures`: per-class tables and the picture grid (no MLflow).

Importing this package does not import mlflow; the functions do, when called.
"""

from more.tracking.runs import (
    LaunchTracker,
    TrialTracker,
    error_text,
    flat_params,
    log_remote_probe,
    trial_key,
    trial_tags,
)
from more.tracking.store import (
    MlflowServer,
    TrackingError,
    default_store_dir,
    resolve_tracking_uri,
    start_server,
    stop_server,
)

__all__ = [
    "LaunchTracker", "MlflowServer", "TrackingError", "TrialTracker", "default_store_dir", "error_text", "flat_params",
    "log_remote_probe", "resolve_tracking_uri", "start_server", "stop_server", "trial_key", "trial_tags",
]
