"""Reports: the paper's tables regenerated from tracked runs (``python -m more report``).

Data flows one way: trial records (:mod:`.sources`, from MLflow via :mod:`.mlflow_reader` or from the harness's
files) -> table models (:mod:`.tables`, statistics in :mod:`.stats`) -> Markdown / LaTeX / CSV (:mod:`.render`) and
PNG plots (:mod:`.plots`), assembled by :mod:`.build`. Tables 1 and 2 come from the infer runs of the same trials
(:mod:`.infer_reader` -> :mod:`.tables12`, protocols in :mod:`.protocols`), the authors' run from
:mod:`.infer_reader` -> :mod:`.authors`, and every table's figure from :mod:`.charts` (what) and :mod:`.figures`
(drawn), glued in by :mod:`.sections`. Nothing here imports the trainer, torch or ray.
"""

from more.report.build import FORMATS, Report, ReportOptions, build_report, write_report
from more.report.sources import Checkpoint, Experiment, SourceError, TrialRecord, load_experiment

__all__ = [
    "FORMATS", "Checkpoint", "Experiment", "Report", "ReportOptions", "SourceError", "TrialRecord", "build_report",
    "load_experiment", "write_report",
]
