"""more: MoRe (AAAI 2025) weakly supervised semantic segmentation with a Ray Tune ablation harness.

Data flows one way: spec (YAML) -> config -> trial -> trainer -> metrics -> tracking -> report.
"""

__version__ = "0.1.0"
