"""Session-wide isolation (no test writes to the repo's embedded MLflow store, work/mlflow) and shared fixtures."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_config import TINY  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_mlflow_store(tmp_path_factory):
    """Point the default tracking URI (inherited by subprocesses and Ray workers) at a per-session sqlite store."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        yield
        return
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def template_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite database to copy into each test store. Creating one runs MLflow's
    migrations (~15 s on the 2-core test machines), so a copy is kept in pytest's cache folder, keyed by the MLflow
    version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = Path(cache.mkdir("more-mlflow-template")) if cache is not None else tmp_path_factory.mktemp("template")
    template = folder / f"empty-mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        build = tmp_path_factory.mktemp("build") / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{build}").search_experiments()
        tmp = template.with_suffix(".tmp")
        shutil.copyfile(build, tmp)
        tmp.replace(template)
    return template


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset of ``tiny_config.TINY``, generated once per session."""
    from more.config import load_config
    from more.data import ensure_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    ensure_dataset(load_config("synthetic", [*TINY, f"data.root={root}"]), progress=lambda *_: None)
    return root
