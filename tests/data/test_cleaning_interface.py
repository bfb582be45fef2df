"""The cleaning stage's side of the DataModule seam: ``lifecycle.interfaces.CleanableData``
checked up front, and the run folder written by global rank 0 alone."""

from __future__ import annotations

import numpy as np
import pytest
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lifecycle.data.cleaning.stage import DataCleaner
from lifecycle.data.images import ImageClassificationDataModule
from lifecycle.errors import ConfigError


class OnlyRecords:
    """A user's DataModule that hands over its records but cannot serve folds."""

    def cleaning_records(self):
        raise AssertionError("not reached")


def test_a_datamodule_without_the_cleaning_methods_is_refused_by_name():
    with pytest.raises(ConfigError) as caught:
        DataCleaner().run(object())
    message = str(caught.value)
    assert "`cleaning_records()` and `use_fold()`" in message
    assert "lifecycle.interfaces.CleanableData" in message and "Fix:" in message
    with pytest.raises(ConfigError, match=r"lacks `use_fold\(\)` .*`cleaning.label_issues: off`"):
        DataCleaner().run(OnlyRecords())
    # without K-fold training use_fold is never called: records alone are enough
    DataCleaner(label_issues="off").check_cleanable(OnlyRecords())
    DataCleaner(probabilities="saved.npy").check_cleanable(OnlyRecords())


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(24, 8, 8), dtype=np.uint8)
    x[1] = x[0]  # one exact duplicate
    y = np.arange(24) % 2
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize("rank", [0, 1])
def test_only_global_rank_zero_writes_the_run_folder(tmp_path, tiny_npz, monkeypatch, rank):
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    cleaner = DataCleaner(label_issues="off", near_duplicates=False)
    out = tmp_path / "out"
    result = cleaner.run(ImageClassificationDataModule(str(tiny_npz)), out_dir=out)
    assert len(result.records) - len(result.kept) == 1  # the copy, found on every rank
    assert result.out_dir == out
    if rank == 0:
        written = {p.name for p in out.iterdir()}
        expected = {"findings.csv", "manifest.csv", "removed.csv", "report.json", "report.md"}
        assert expected <= written and "class_balance.png" in written
        assert len((out / "manifest.csv").read_text().splitlines()) == 1 + len(result.kept)
    else:
        assert not out.exists()
