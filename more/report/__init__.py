"""Reports: the paper's tables regenerated from tracked runs (``python -m more report``).

Data flows one way: trial records (:mod:`.sources`, from MLflow via :mod:`.mlflow_reader` or from the harness's
files) -> table models (:mod:`.tables`, statistics in :mod:`.stats`) -> Markdown / LaTeX / CSV (:mod:`.render`) and
PNG plots (:mod:`.plots`), assembled by :mod:`.build`. Nothing here imports the trainer, torch or ray.
"""

from more.report.build import FORMATS, Report, ReportOptions, build_report, write_report
from more.report.sources import Checkpoint, Experiment, SourceError, TrialRecord, load_experiment

__all__ = [
    "FORMATS", "Checkpoint", "Experiment", "Report", "ReportOptions", "SourceError", "TrialRecord", "build_report",
    "load_experiment", "write_report",
]
