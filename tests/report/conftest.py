"""Fixtures for the report tests: a temporary sqlite MLflow store and a helper that writes tracked runs with the
schema's tags, params and metrics (no training), plus small spec files."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tracking(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Tracking:
    root = tmp_path_factory.mktemp("mlflow")
    db = root / "mlflow.db"
    shutil.copyfile(template_db, db)  # the session's migrated empty store (tests/conftest.py)
    return Tracking(f"sqlite:///{db}", root / "artifacts")


class Tracking:
    """Writes experiments, parent (launch) runs and child (trial) runs the way the tracking module does."""

    def __init__(self, uri: str, artifacts: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.artifacts = artifacts
        self.client = MlflowClient(tracking_uri=uri)

    def experiment(self, name: str) -> str:
        return self.client.create_experiment(name, artifact_location=(self.artifacts / name).as_uri(),
                                             tags={"more.spec_name": name})

    def launch(self, exp_id: str, spec_name: str, digest: str) -> str:
        run = self.client.create_run(exp_id, run_name=f"{spec_name}-{digest}", tags={
            "more.kind": "launch", "more.spec_name": spec_name, "more.spec_hash": digest, "more.git_commit": "abc"})
        return run.info.run_id

    def trial(self, exp_id: str, parent: str, *, spec_name: str, digest: str, trial: str, condition: str, seed: int,
              config: dict[str, Any], evals: dict[int, dict[str, float]], sweep: dict[str, Any] | None = None,
              status: str = "FINISHED", error: str | None = None, per_class_csv: dict[int, str] | None = None) -> str:
        """One child run; ``evals`` maps iteration -> metrics logged at that step."""
        from mlflow.entities import Metric, Param

        tags = {"mlflow.parentRunId": parent, "more.kind": "trial", "more.trial_key": f"{digest}:{trial}",
                "more.condition": condition, "more.seed": str(seed), "more.spec_name": spec_name,
                "more.spec_hash": digest, "more.sweep": json.dumps(sweep or {}), "more.checkpoint": "last"}
        if error:
            tags["more.error"] = error
        run_id = self.client.create_run(exp_id, run_name=trial, tags=tags).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for step, values in evals.items() for k, v in values.items()]
        params = [Param(k, str(v)) for k, v in config.items()]
        self.client.log_batch(run_id, metrics=metrics, params=params)
        for step, text in (per_class_csv or {}).items():
            self.client.log_text(run_id, text, f"per_class/iter_{step}.csv")
        self.client.set_terminated(run_id, status=status)
        return run_id


def write_spec(path: Path, name: str, conditions: dict[str, dict[str, Any]], seeds: list[int],
               sweeps: dict[str, list[Any]] | None = None, paper: dict[str, Any] | None = None) -> Path:
    import yaml

    data: dict[str, Any] = {"name": name, "experiment": {"config": "synthetic"}, "conditions": conditions,
                            "seeds": seeds, "metric": "val/seg/miou", "mode": "max"}
    if sweeps:
        data["sweeps"] = sweeps
    if paper:
        data["paper"] = paper
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def spec_writer():
    return write_spec
