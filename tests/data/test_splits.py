"""Seeded, stratified splits; a split that cannot be stratified says so and why."""

import logging

import numpy as np

from lifecycle.data.splits import split_indices


def test_stratified_split_keeps_class_shares_and_says_nothing(caplog):
    y = np.repeat([0, 1, 2], [50, 30, 20])
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.splits"):
        kept, held = split_indices(len(y), 0.2, 0, y)
    assert np.bincount(y[held]).tolist() == [10, 6, 4] and not caplog.records
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))


def test_a_class_with_one_sample_drops_stratification_with_a_warning_naming_it(caplog):
    y = np.array([0] * 10 + [1] * 10 + [2] + [3])
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.splits"):
        kept, held = split_indices(len(y), 0.25, 0, y, name="val")
    assert len(held) == 6 and len(kept) == 16  # still a seeded split of the same size
    (record,) = caplog.records
    assert "val split of 22 samples is not stratified" in record.message
    assert "2 of 4 classes have a single sample (class indices [2, 3])" in record.message
    assert "`val_fraction`" in record.message


def test_too_few_held_out_samples_for_every_class_is_warned(caplog):
    y = np.repeat(np.arange(10), 4)
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.splits"):
        split_indices(len(y), 0.1, 0, y, name="test")
    assert "the 4 held-out samples cannot hold one of each of the 10 classes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.splits"):
        split_indices(len(y), 0.9, 0, y, name="test")  # sklearn would raise on this one
    assert "the 4 kept samples cannot hold one of each of the 10 classes" in caplog.text
