"""Evaluation: confusion-matrix metrics (:mod:`more.eval.metrics`)."""
