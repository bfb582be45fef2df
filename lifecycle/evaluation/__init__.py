"""Evaluation: reports written after test and predict, and the plots they contain."""

from lifecycle.evaluation.report import EvaluationReport, PredictionWriter

__all__ = ["EvaluationReport", "PredictionWriter"]
