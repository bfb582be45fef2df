"""Seeded train/val(/test) splits, stratified by class where labels are classes."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.model_selection import train_test_split

from lifecycle.data.datasets import DataValidationError

log = logging.getLogger(__name__)

UNLABELED = -1
"""The label of a training record whose label is hidden (``unlabeled_rest``): a transfer-set
record that only a distillation teacher scores."""


def split_indices(
    n: int, fraction: float, seed: int, stratify: np.ndarray | None = None, name: str = "val"
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held out) with ``fraction`` held out, seeded and stratified.

    Raises:
        DataValidationError: when the fraction leaves either side empty, or a class is too rare
            to stratify.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataValidationError(f"`{name}_fraction` must be in [0, 1), got {fraction}.")
    idx = np.arange(n)
    if fraction == 0.0:
        return idx, idx[:0]
    held = int(round(n * fraction))
    if held == 0 or held == n:
        raise DataValidationError(
            f"`{name}_fraction`={fraction} of {n} samples leaves an empty split. Fix: raise the fraction or add data."
        )
    if stratify is not None:
        counts = np.bincount(stratify.astype(np.int64))
        classes = np.flatnonzero(counts)
        rare = classes[counts[classes] < 2]
        if len(rare) or held < len(classes) or n - held < len(classes):
            if len(rare):
                reason = (
                    f"{len(rare)} of {len(classes)} classes have a single sample "
                    f"(class indices {rare[:10].tolist()}{' ...' if len(rare) > 10 else ''})"
                )
            else:
                side, size = ("held-out", held) if held < len(classes) else ("kept", n - held)
                reason = (
                    f"the {size} {side} samples cannot hold one of each of the {len(classes)} "
                    "classes"
                )
            knob = "`train_subset`" if name == "subset" else f"`{name}_fraction`"
            # a stratified split needs every class on both sides: fall back to a seeded shuffle
            log.warning(
                f"The {name} split of {n} samples is not stratified by class, only seeded: "
                f"{reason}. Class shares may differ between the splits. Fix: add samples of "
                f"the rare classes or change {knob}."
            )
            stratify = None
    kept, out = train_test_split(idx, test_size=held, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(out)


def stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced (stratified) subset of ``size`` rows, seeded."""
    if size >= len(y):
        return np.arange(len(y))
    kept, _ = split_indices(len(y), 1.0 - size / len(y), seed, stratify=y, name="subset")
    return kept


def labeled_and_rest(y: np.ndarray, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(subset, rest)``: the indices of a stratified ``size``-row subset (all rows for
    ``None``) and of every other row."""
    if size is None:
        return np.arange(len(y)), np.arange(0)
    subset = stratified_subset(y, size, seed)
    return subset, np.setdiff1d(np.arange(len(y)), subset)
