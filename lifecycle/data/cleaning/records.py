"""What a DataModule hands the cleaning stage: every record it can read, before any split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lifecycle.data.datasets import DataIssue


@dataclass
class CleaningRecords:
    """The records to clean, and the held-out test records to check for leakage.

    Attributes:
        kind: ``"image"`` (items are ``uint8`` (N, H, W, C)) or ``"text"`` (a list of strings).
        items: the records' content.
        labels: class indices (N,).
        sources: each record's name (what a manifest lists).
        class_names: names of the classes.
        test_items: the dataset's own test records (never changed; training records that copy
            one of them are leakage), or ``None``.
        test_sources: their names.
        issues: records that could not be read at all (each left out, with its reason).
    """

    kind: Literal["image", "text"]
    items: np.ndarray | list[str]
    labels: np.ndarray
    sources: list[str]
    class_names: list[str]
    test_items: np.ndarray | list[str] | None = None
    test_sources: list[str] | None = None
    issues: list[DataIssue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def unreadable(self) -> int:
        """How many records reading left out; the other ``issues`` were changed and kept."""
        return sum(issue.action == "dropped" for issue in self.issues)

    def take(self, idx: np.ndarray) -> CleaningRecords:
        """The records ``idx`` (the test records and issues are kept as they are)."""
        idx = np.asarray(idx, dtype=np.int64)
        items = (
            self.items[idx] if isinstance(self.items, np.ndarray) else [self.items[i] for i in idx]
        )
        return CleaningRecords(
            self.kind, items, self.labels[idx], [self.sources[i] for i in idx],
            self.class_names, self.test_items, self.test_sources, self.issues,
        )  # fmt: skip
