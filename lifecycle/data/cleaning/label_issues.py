"""Label issues by confident learning (Northcutt, Jiang and Chuang, JAIR 2021), on out-of-fold
predicted probabilities.

Implemented here from the paper (cleanlab, its reference implementation, is AGPL and only a
benchmark dependency):

1. a per-class threshold ``t_j``: the mean predicted probability of class ``j`` over the records
   labeled ``j`` (how confident the model is, on average, in that class);
2. the confident joint ``C[i, j]``: records labeled ``i`` whose probability of ``j`` reaches
   ``t_j`` (the largest such ``j`` when several do), an estimate of "labeled ``i``, truly ``j``";
3. calibrated to the label counts and normalized, the joint ``Q`` of noisy and true labels;
4. prune by noise rate: for each ``i != j``, the ``n * Q[i, j]`` records labeled ``i`` with the
   largest margin ``p_j - p_i`` are label issues. A record whose most probable class is its own
   label is never one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lifecycle.errors import DataError


class LabelIssueError(DataError):
    """Labels and probabilities that confident learning cannot use; the message says why."""


def check_probabilities(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` (N,) in ``[0, K)`` and ``probs`` (N, K) whose rows sum to 1."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise LabelIssueError(
            f"`probs` must be (N, K) with one row per label: got {probs.shape} for {len(labels)} labels."
        )
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= probs.shape[1]
    ):
        raise LabelIssueError(
            f"labels must be integers in [0, {probs.shape[1]}) (the columns of `probs`); got "
            f"{labels.dtype} from {labels.min()} to {labels.max()}."
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise LabelIssueError("`probs` holds NaN, Inf or negative values.")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise LabelIssueError("each row of `probs` must sum to 1 (softmax outputs).")
    return labels.astype(np.int64), probs


def per_class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``t_j``: the mean probability of class ``j`` over records labeled ``j`` (K,)."""
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    # a class nobody is labeled with can never be confidently predicted
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_labels(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each record's confident true label: the most probable class among those whose
    probability reaches its threshold, or ``-1`` when none does (N,)."""
    thresholds = per_class_thresholds(labels, probs)
    above = probs >= thresholds - 1e-6
    masked = np.where(above, probs, -1.0)
    best = masked.argmax(axis=1)
    return np.where(above.any(axis=1), best, -1)


def confident_joint(labels: np.ndarray, probs: np.ndarray, calibrate: bool = True) -> np.ndarray:
    """Counts ``C[i, j]`` of records labeled ``i`` confidently predicted ``j`` (K, K); calibrated,
    each row is rescaled to the number of records labeled ``i``."""
    labels, probs = check_probabilities(labels, probs)
    k = probs.shape[1]
    confident = confident_labels(labels, probs)
    keep = confident >= 0
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[keep], confident[keep]), 1)
    if calibrate:
        counts = np.bincount(labels, minlength=k)
        rows = joint.sum(axis=1, keepdims=True)
        joint = np.where(rows > 0, joint / np.maximum(rows, 1) * counts[:, None], 0.0)
    return joint


def noise_matrix(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The estimated joint distribution ``Q[i, j]`` = P(label ``i``, true class ``j``) (K, K)."""
    joint = confident_joint(labels, probs)
    return joint / joint.sum()


@dataclass
class LabelIssues:
    """What :func:`find_label_issues` found.

    Attributes:
        mask: ``True`` for records whose label is likely wrong (N,).
        suggested: the confident label of each record (its most probable class where no class
            reaches its threshold) (N,).
        self_confidence: the predicted probability of each record's given label (N,); the lower,
            the likelier the label is wrong.
        joint: the estimated joint ``Q`` of given and true labels (K, K).
    """

    mask: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray
    joint: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        """Indices of the flagged records, most likely wrong first (lowest self-confidence)."""
        flagged = np.flatnonzero(self.mask)
        return flagged[np.argsort(self.self_confidence[flagged], kind="stable")]

    @property
    def noise_rate(self) -> float:
        """The estimated share of wrong labels, ``1 - trace(Q)``."""
        return float(1.0 - np.trace(self.joint))


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """Find records whose label is likely wrong, by confident learning (prune by noise rate).

    Args:
        labels: given labels (N,) in ``[0, K)``.
        probs: out-of-fold predicted probabilities (N, K): each row from a model that did not
            train on that record (see :func:`lifecycle.data.cleaning.out_of_fold_probabilities`).

    Returns:
        :class:`LabelIssues` with the mask, suggested labels and scores.

    Raises:
        LabelIssueError: shapes disagree, labels are out of range, or rows are not probabilities.
    """
    labels, probs = check_probabilities(labels, probs)
    n, k = probs.shape
    joint = noise_matrix(labels, probs)
    rows = np.arange(n)
    self_confidence = probs[rows, labels]
    mask = np.zeros(n, dtype=bool)
    for given in range(k):
        members = np.flatnonzero(labels == given)
        for true in range(k):
            if true == given:
                continue
            count = int(round(n * joint[given, true]))
            if count == 0 or len(members) == 0:
                continue
            margin = probs[members, true] - probs[members, given]
            # largest margin first; a stable sort keeps ties in record order (reproducible)
            order = np.argsort(-margin, kind="stable")[:count]
            mask[members[order]] = True
    predicted = probs.argmax(axis=1)
    mask &= predicted != labels
    confident = confident_labels(labels, probs)
    suggested = np.where(confident >= 0, confident, predicted)
    # a flagged record's suggestion is never its own label
    suggested = np.where(mask & (suggested == labels), predicted, suggested)
    return LabelIssues(mask, suggested, self_confidence, joint)
