"""Optuna searches over config keys (``python -m more search``).

- :mod:`more.search.space`: the declarative space (float, int, log, step, categorical) and order constraints, as an
  Optuna define-by-run function.
- :mod:`more.search.spec`: the search spec format (``experiments/search_*.yaml``, under a top-level ``search`` key).
- :mod:`more.search.cached`: the seed threshold over cached score maps (no retraining).
- :mod:`more.search.tuned`: training hyperparameters through Ray Tune's ``OptunaSearch`` with ASHA pruning.
- :mod:`more.search.report`: trials table, importances, best config overlay, MLflow runs.
"""
