"""Every ``infer`` is one MLflow run, linked to the checkpoint's training trial (contract 2 of the harness).

- Experiment: the one of the checkpoint's trial run when it is found (the run folder's ``identity.json`` content key
  -> the run tagged ``more.content_key``), else ``more-infer``.
- Resume: the run is found again by its tag ``more.infer.key`` (:func:`more.eval.infer.infer_key`: the
  checkpoint's digest, task, source, split, scales, CRF and the other settings that change values) and continued, so
  an interrupted and resumed inference, or the same inference run again, stays one run.
- Metrics at step = the checkpoint's iteration, in the units of the training-time ``val/<output>/*`` metrics
  (percent; the confusion ratio as a ratio): ``infer/<output>/{miou,precision,recall,confusion}``,
  ``infer/<output>/iou/<class name>``, and ``infer/images``.
- Tracking never costs an output: the run is opened on a background thread while the inference works, and every
  failure to reach MLflow is one warning, after which tracking is off for the invocation.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from more.tracking.store import get_or_create_experiment, make_client

INFER_EXPERIMENT = "more-infer"
KIND = "infer"
KEY_TAG = "more.infer.key"
COPIED_TAGS = ("more.spec_name", "more.spec_hash", "more.condition", "more.seed", "more.content_key", "more.code_id")
MEAN_METRICS = {"miou": "miou", "mprecision": "precision", "mrecall": "recall", "mconfusion": "confusion"}
IDENTITY_FILE = "identity.json"  # more.harness.identity.IDENTITY_FILE (not imported: tracking does not import ray)


def warn_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"tag value {value!r} cannot be searched: it contains a quote or backslash")
    return f"'{value}'"


def run_folder_of(checkpoint_file: str | Path) -> Path:
    """The training run folder of ``RUN/checkpoints/iter_N/checkpoint.pt`` (else the checkpoint's folder)."""
    folder = Path(checkpoint_file).parent
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder


def content_key_of(checkpoint_file: str | Path) -> str | None:
    """The trial's content key from its run folder's ``identity.json``, or None for a run outside the harness."""
    path = run_folder_of(checkpoint_file) / IDENTITY_FILE
    try:
        key = json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
    return str(key) if key else None


def find_train_run(client: Any, checkpoint_file: str | Path) -> Any | None:
    """The trial run that trained ``checkpoint_file``: tagged with its content key, in any experiment; the one whose
    ``more.run_dir`` is the checkpoint's run folder first, then the newest finished one."""
    from mlflow.entities import ViewType

    key = content_key_of(checkpoint_file)
    if key is None:
        return None
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not ids:
        return None
    runs = list(client.search_runs(ids, filter_string=f"tags.`more.content_key` = {_quoted(key)} and "
                                   f"tags.`more.kind` = 'trial'", max_results=100,
                                   order_by=["attributes.start_time DESC"]))
    if not runs:
        return None
    folder = str(run_folder_of(checkpoint_file).resolve())

    def rank(run: Any) -> tuple[bool, bool]:
        here = str(Path(run.data.tags.get("more.run_dir", "")).resolve()) == folder
        return (not here, run.info.status != "FINISHED")

    return sorted(runs, key=rank)[0]  # sorted() is stable: newest first within a rank


def infer_tags(plan: Any, train_run: Any | None) -> dict[str, str]:
    """The tags of contract 2 for a checked plan (:class:`more.eval.infer_job.InferPlan`)."""
    options = plan.options
    tags = {
        "more.kind": KIND, KEY_TAG: plan.key, "more.infer.task": options.task,
        "more.infer.source": options.source if options.uses_source else "seg", "more.infer.split": plan.split,
        "more.infer.multiscale": str(options.multiscale).lower(), "more.infer.crf": str(options.crf).lower(),
        "more.infer.scales": json.dumps(plan.settings["scales"]), "more.infer.out": str(plan.out),
        "more.infer.checkpoint": str(plan.run.checkpoint), "more.infer.iteration": str(plan.run.iteration),
        "more.infer.maps": options.maps, "more.dataset": plan.cfg.data.dataset,
        "more.train_run_id": train_run.info.run_id if train_run is not None else "",
        "mlflow.runName": options.default_dir_name(plan.split),
    }
    if options.uses_source:
        tags["more.infer.bkg_thre"] = str(plan.cfg.eval.bkg_thre)
    if train_run is not None:
        tags.update({name: train_run.data.tags[name] for name in COPIED_TAGS if name in train_run.data.tags})
    return tags


def infer_params(settings: dict[str, Any]) -> dict[str, str]:
    """The settings behind the key as MLflow params (the same for every invocation of one key)."""
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in settings.items()
              if k not in ("maps", "config")}
    params.update({k: json.dumps(v) if isinstance(v, list) else str(v)
                   for k, v in settings.get("config", {}).items() if k != "eval.batch_size"})
    return params


def infer_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``infer/<output>/*`` metrics from a ``metrics.json`` record (already in percent), plus ``infer/images``."""
    metrics: dict[str, float] = {"infer/images": float(record["num_images"])}
    for output, values in record.get("outputs", {}).items():
        for name, metric in MEAN_METRICS.items():
            metrics[f"infer/{output}/{metric}"] = _number(values[name])
        for cls, value in values["iou"].items():
            metrics[f"infer/{output}/iou/{cls}"] = _number(value)
    return metrics


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)  # metrics.json writes NaN as null


class InferRunTracker:
    """The MLflow run of one ``infer`` invocation (see the module docstring); failures are warnings.

    Args:
        uri: the tracking URI (``more.tracking.store.resolve_tracking_uri``).
        log: where warnings and the run's link go.
    """

    def __init__(self, uri: str, *, log: Callable[[str], None] = warn_stderr) -> None:
        self.uri, self.log = uri, log
        self.client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.continued = False
        self._thread: threading.Thread | None = None
        self._failed = False

    def _warn(self, what: str, exc: BaseException) -> None:
        if not self._failed:
            self.log(f"warning: MLflow tracking off for this inference ({what} failed: "
                     f"{' '.join(str(exc).split())[:300]}); the outputs are complete. Run the same command again "
                     f"to log it once {self.uri} answers")
        self._failed = True

    def start(self, plan: Any) -> None:
        """Find or create the run on a background thread (the inference does not wait for MLflow)."""
        self._thread = threading.Thread(target=self._open, args=(plan,), name="more-infer-mlflow", daemon=True)
        self._thread.start()

    def _open(self, plan: Any) -> None:
        try:
            self.client = make_client(self.uri)
            train_run = find_train_run(self.client, plan.run.checkpoint)
            if train_run is not None:
                self.experiment_id = train_run.info.experiment_id
            else:
                self.experiment_id = get_or_create_experiment(self.client, INFER_EXPERIMENT, uri=self.uri)
            tags = infer_tags(plan, train_run)
            existing = list(self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = {_quoted(plan.key)} and "
                f"tags.`more.kind` = '{KIND}'", max_results=1, order_by=["attributes.start_time ASC"]))
            if existing:
                self.run_id, self.continued = existing[0].info.run_id, True
                self.client.update_run(self.run_id, status="RUNNING")
                if "more.error" in existing[0].data.tags:  # an earlier attempt failed; this one continues it
                    self.client.delete_tag(self.run_id, "more.error")
                for name, value in tags.items():
                    self.client.set_tag(self.run_id, name, value)
            else:
                run = self.client.create_run(self.experiment_id, tags=tags, run_name=tags["mlflow.runName"])
                self.run_id = run.info.run_id
                from mlflow.entities import Param

                params = [Param(k, v) for k, v in sorted(infer_params(plan.settings).items())]
                for start in range(0, len(params), 100):
                    self.client.log_batch(self.run_id, params=params[start:start + 100])
        except Exception as exc:  # noqa: BLE001 -- tracking never stops an inference
            self._warn("opening the MLflow run", exc)
            self.run_id = None

    def _ready(self) -> bool:
        if self._thread is not None:
            self._thread.join()
        return self.run_id is not None and not self._failed

    def finish(self, plan: Any, result: Any, record: dict[str, Any]) -> None:
        """Log the metrics at the checkpoint's iteration and the metrics files, and end the run FINISHED."""
        if not self._ready():
            return
        try:
            from mlflow.entities import Metric

            step = max(int(plan.run.iteration), 0)
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in sorted(infer_metrics(record).items())]
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
            for name in ("metrics.json", "metrics.md"):
                if (plan.out / name).is_file():
                    self.client.log_artifact(self.run_id, str(plan.out / name))
            self.client.set_tag(self.run_id, "more.infer.images", str(result.num_images))
            self.client.set_terminated(self.run_id, status="FINISHED")
            verb = "continued" if self.continued else "logged"
            self.log(f"MLflow: {verb} run {self.run_id} in experiment {self.experiment_id} ({self.uri})")
        except Exception as exc:  # noqa: BLE001
            self._warn("logging the metrics", exc)

    def fail(self, plan: Any, error: BaseException) -> None:
        """End the run FAILED with the error (a resume continues it)."""
        if not self._ready():
            return
        try:
            self.client.set_tag(self.run_id, "more.error", f"{type(error).__name__}: {error}"[:5000])
            self.client.set_terminated(self.run_id, status="FAILED")
        except Exception as exc:  # noqa: BLE001
            self._warn("marking the run failed", exc)
