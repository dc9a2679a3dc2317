"""Fixtures for the tracking tests: the tiny config (tests/tiny_config.py) with two pictures, and sqlite MLflow stores
copied from one migrated template database (MLflow's migrations take ~15 s on the 2-core test machines)."""

from __future__ import annotations

import shutil

import pytest
from tiny_config import TINY as SHARED_TINY

TINY = [*SHARED_TINY, "eval.num_vis=2"]


@pytest.fixture
def make_store(template_db, tmp_path_factory):
    """``make_store()`` -> the URI of a fresh sqlite store (artifacts in ``<folder>/artifacts``)."""

    def make() -> str:
        folder = tmp_path_factory.mktemp("mlflow")
        shutil.copyfile(template_db, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return make
