"""more: MoRe (AAAI 2025) weakly supervised semantic segmentation with a Ray Tune ablation harness.

Data flows one way: spec (YAML) -> config -> trial -> trainer -> metrics -> tracking -> report.
"""

from more.privacy import disable_telemetry

__version__ = "0.1.0"

# Before anything imports MLflow or starts Ray: usage telemetry stays off unless the user opts in (more/privacy.py).
disable_telemetry()
