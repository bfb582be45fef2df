"""What makes two texts identical, and which record of a group of copies is kept.

One rule, used by the text DataModules (:mod:`lifecycle.data.text`) and by the cleaning stage
(:mod:`lifecycle.data.cleaning.stage`, for images and texts alike), so that a cleaned
manifest read back by a DataModule loses nothing more. This module imports nothing of the
toolkit: both sides import it, neither imports the other.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Hashable, Sequence


def standard_text(text: str) -> str:
    """Unicode NFKC, runs of whitespace as one space, trimmed (``normalize_text``)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def text_key(text: str) -> str:
    """What makes two texts "identical" for splitting and de-duplication: NFKC, case and
    runs of whitespace ignored."""
    return standard_text(text).casefold()


def identical_text_groups(texts: Sequence[str]) -> list[list[int]]:
    """Row indices grouped by identical text (:func:`text_key`), every row in one group (single
    rows too), groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text_key(text), []).append(i)
    return list(groups.values())


def kept_record(rows: Sequence[int], labels: Sequence[Hashable]) -> int:
    """The record kept of a group of copies: the first (in ``rows`` order) whose label is the
    group's most common one; when two or more labels tie for most common, the first record
    carrying any of them, i.e. the group's first record among the tied labels.

    Why keep one rather than drop a tied group: de-duplication removes copies, it does not
    judge labels. Dropping a tied group would remove a distinct text (or, for near duplicates,
    distinct records) from the data entirely; keeping one keeps the content and lists every
    other copy with its label, so a conflict is visible in ``data_issues.csv`` / the cleaning
    report, and in ``lifecycle clean`` the kept record's label still goes through the label
    issue search. The choice is deterministic: it depends only on the records' order.

    Args:
        rows: the group's record indices, in the data's order.
        labels: the label of each record, indexed by record (any hashable labels).

    Returns:
        The kept record's index (an element of ``rows``).
    """
    votes = Counter(labels[i] for i in rows)
    top = max(votes.values())
    return next(i for i in rows if votes[labels[i]] == top)
