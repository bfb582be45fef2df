"""Checks every DataModule runs before training: each error names the count and the first offender."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lifecycle.data.datasets import DataIssue, DataValidationError, Split

__all__ = [
    "DataIssue",  # re-exported: defined beside the loaders that list skipped records
    "check_finite",
    "check_labels",
    "check_not_empty",
    "summarize_issues",
    "write_issues",
]


def check_not_empty(split: Split | None, name: str, fix: str = "") -> None:
    if split is None or len(split) == 0:
        raise DataValidationError(
            f"The {name} split is empty (0 samples). {fix or 'Fix: give more data or smaller split fractions.'}"
        )


def check_finite(
    values: np.ndarray,
    what: str,
    split: Split,
    fix: str = "remove or impute them (the cleaning stage can do it by policy)",
) -> None:
    """Raise when any row of ``values`` (features or targets) holds NaN or Inf; ``fix`` ends the
    message."""
    flat = values.reshape(len(values), -1).astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if len(bad):
        raise DataValidationError(
            f"{len(bad)} of {len(values)} rows have NaN or Inf {what}; the first is {split.source(int(bad[0]))}. "
            f"Fix: {fix}."
        )


def check_labels(split: Split, num_classes: int, name: str) -> None:
    """Raise when labels are not integers in ``[0, num_classes)``."""
    y = split.y
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.all(np.isfinite(y))
            and np.all(y == np.round(y))
        ):
            y = y.astype(np.int64)
        else:
            bad = np.flatnonzero(~np.isfinite(y.astype(np.float64)) | (y != np.round(y)))
            raise DataValidationError(
                f"{len(bad)} labels in the {name} split are not integers; the first is "
                f"{y[bad[0]]!r} at {split.source(int(bad[0]))}."
            )
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if len(bad):
        raise DataValidationError(
            f"{len(bad)} labels in the {name} split are outside [0, {num_classes}); the first is "
            f"{int(y[bad[0]])} at {split.source(int(bad[0]))}. Fix: labels must be 0..{num_classes - 1}, "
            "or give `class_names` / a `num_classes` that covers them."
        )


def write_issues(issues: list[DataIssue], path: Path) -> Path:
    """Write ``issues`` as a CSV with columns ``source``, ``reason``, ``action``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(DataIssue._fields)
        writer.writerows(issues)
    return path


def summarize_issues(issues: list[DataIssue]) -> list[str]:
    """One line per (reason, action) with its count and first record, most frequent first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for issue in issues:
        groups.setdefault((issue.reason, issue.action), []).append(issue.source)
    return [
        f"{len(sources)} records with {reason}: {action} (first: {sources[0]})"
        for (reason, action), sources in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]
