"""No usage data leaves the machine unless the user asks for it: the stack's telemetry is off by default.

What would phone home without this (versions of ``constraints.txt``):

- MLflow (>= 3.2): the client and the ``mlflow server`` send usage events, and the server fetches a remote config for
  its UI's own telemetry. Read at ``import mlflow`` and at each server request: ``MLFLOW_DISABLE_TELEMETRY`` or
  ``DO_NOT_TRACK``.
- Ray: the cluster (its head's dashboard process) reports usage stats, cluster metadata and cloud metadata to
  usage-stats.ray.io every hour. Read by ``ray.init`` / ``ray start`` on the head: ``RAY_USAGE_STATS_ENABLED=0``
  (``ray start`` and ``ray up`` also take ``--disable-usage-stats``).
- huggingface_hub (timm loads hub weights through it): telemetry on downloads; ``HF_HUB_DISABLE_TELEMETRY`` or
  ``DO_NOT_TRACK``.

Optuna, timm itself, torch and pydensecrf send nothing.

``import more`` calls :func:`disable_telemetry`, so every process that uses the package (the CLI, a notebook, a Ray
worker unpickling a trainable) sets these before it imports MLflow or starts Ray, and the processes it starts
(Ray's node processes, ``mlflow server``) inherit them. A variable already set in the environment is kept, so a
user opts in to one library by setting its own variable (``RAY_USAGE_STATS_ENABLED=1``; for MLflow
``MLFLOW_DISABLE_TELEMETRY=false DO_NOT_TRACK=false``), or to all of them with ``MORE_TELEMETRY=1``, which makes
``more`` leave the environment alone.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OPT_IN = "MORE_TELEMETRY"
TELEMETRY_OFF: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # the cross-tool convention (https://donottrack.sh): MLflow, huggingface_hub, ...
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def opted_in(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when the user asked ``more`` to leave telemetry to each library (``MORE_TELEMETRY=1``)."""
    env = os.environ if environ is None else environ
    return env.get(OPT_IN, "").strip().lower() in ("1", "true", "yes", "on")


def telemetry_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The telemetry variables to hand to a process ``more`` starts: each one's value in ``environ`` (default
    ``os.environ``) when set there, else the value that turns it off; empty when the user opted in."""
    env = os.environ if environ is None else environ
    if opted_in(env):
        return {}
    return {key: env.get(key, off) for key, off in TELEMETRY_OFF.items()}


def disable_telemetry(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every telemetry switch of :data:`TELEMETRY_OFF` that is not set yet in ``environ`` (default
    ``os.environ``); returns the variables it set."""
    env = os.environ if environ is None else environ
    added = {key: value for key, value in telemetry_env(env).items() if key not in env}
    env.update(added)
    return added
