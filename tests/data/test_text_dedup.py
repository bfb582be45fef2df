"""One de-duplication rule for texts (lifecycle.data.dedup.kept_record), the same kept records
from the text DataModule and from the cleaning stage, and the duplicate finder's library
union-find and neighbour search."""

from __future__ import annotations

import numpy as np

from lifecycle.data.cleaning.duplicates import (
    exact_duplicates,
    groups_from_pairs,
    near_duplicate_text_pairs,
    nearest_neighbours,
)
from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.cleaning.stage import DataCleaner
from lifecycle.data.corpora import TextTable
from lifecycle.data.dedup import identical_text_groups, kept_record
from lifecycle.data.text import TextClassificationDataModule

# groups: "a" 2 pos + 1 neg (majority pos, first pos is row 1); "b" tie, first row 3 is neg;
# "c" alone; "d" 3 copies of one label; "e" tie of three labels
TEXTS = ["A x", "a  X", "A X", "b y", "B Y", "c z", "d", "D", "d ", "e", "E", "e "]
LABELS = ["neg", "pos", "pos", "neg", "pos", "pos", "neg", "neg", "neg", "pos", "mid", "neg"]
KEPT = [1, 3, 5, 6, 9]


def test_the_rule_keeps_the_first_record_of_the_most_common_label():
    groups = identical_text_groups(TEXTS)
    assert groups == [[0, 1, 2], [3, 4], [5], [6, 7, 8], [9, 10, 11]]
    assert [kept_record(g, LABELS) for g in groups] == KEPT
    assert kept_record([4, 3], LABELS) == 4  # a tie goes to the group's first record


def test_the_text_datamodule_and_the_cleaner_keep_the_same_records():
    names = sorted(set(LABELS))
    sources = [f"r{i}" for i in range(len(TEXTS))]
    dm = TextClassificationDataModule(dataset="unused.csv")
    kept_by_datamodule = sorted(
        r for g in dm._dedupe(TextTable("t", TEXTS, LABELS, sources)) for r in g
    )
    records = CleaningRecords(
        "text", TEXTS, np.array([names.index(x) for x in LABELS]), sources, names
    )
    findings = DataCleaner(label_issues="off", near_duplicates=False).find_duplicates(records)
    kept_by_cleaner = sorted(set(range(len(TEXTS))) - {f.index for f in findings})
    assert kept_by_datamodule == kept_by_cleaner == KEPT
    # nothing dropped silently: every other copy is listed, with the kept record it copies
    assert sorted(i.source for i in dm.issues) == sorted(
        s for i, s in enumerate(sources) if i not in KEPT
    )
    reasons = {i.source: i.reason for i in dm.issues}
    assert reasons["r0"] == "duplicate text, outvoted label"
    assert reasons["r4"] == reasons["r10"] == "duplicate text, tied label"
    assert reasons["r2"] == reasons["r7"] == "duplicate text"
    assert {f.source: f.other for f in findings}["r4"] == 3


def test_groups_come_from_connected_components_smallest_member_first():
    pairs = [(7, 2), (2, 9), (4, 5), (0, 3), (3, 8), (8, 0)]
    assert groups_from_pairs(10, pairs) == [[0, 3, 8], [2, 7, 9], [4, 5]]
    assert groups_from_pairs(3, []) == [] and groups_from_pairs(0, []) == []
    assert exact_duplicates(["x", "y", "X ", "z", "y"]) == [[0, 2], [1, 4]]


def test_nearest_neighbours_are_the_most_similar_other_rows():
    rng = np.random.default_rng(0)
    sig = rng.normal(size=(40, 6)).astype(np.float32)
    sig /= np.linalg.norm(sig, axis=1, keepdims=True)
    idx, sim = nearest_neighbours(sig, 3)
    cosine = sig @ sig.T
    np.fill_diagonal(cosine, -np.inf)
    expected = np.argsort(-cosine, axis=1)[:, :3]
    assert idx.shape == (40, 3)
    assert all(set(a) == set(b) for a, b in zip(idx, expected, strict=True))
    assert np.allclose(sim, np.take_along_axis(cosine, idx, 1), atol=1e-5)
    sig[7] = sig[3]  # an identical row is a neighbour (similarity 1), the row itself is not
    idx, sim = nearest_neighbours(sig, 3)
    assert idx[3][0] == 7 and idx[7][0] == 3 and np.isclose(sim[3][0], 1.0, atol=1e-5)
    assert not (idx == np.arange(40)[:, None]).any()


def test_near_duplicate_texts_link_each_group_once():
    base = "the flight was delayed three hours and nobody told us anything at the gate"
    texts = [base, base + " #fail", base + " #fail!", "a completely different short text here"]
    pairs = near_duplicate_text_pairs(texts, threshold=0.7)
    # three near copies: two links span the group (the third pair is never compared)
    assert [(a, b) for a, b, _ in pairs] == [(0, 1), (0, 2)]
    assert groups_from_pairs(len(texts), [(a, b) for a, b, _ in pairs]) == [[0, 1, 2]]
