"""Session-wide isolation: no test writes to the repo's embedded MLflow store (work/mlflow)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_mlflow_store(tmp_path_factory):
    """Point the default tracking URI (inherited by subprocesses and Ray workers) at a per-session sqlite store."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        yield
        return
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
