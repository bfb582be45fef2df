"""Data flows one way: a stage's DataNeeds reach the DataModule before it builds its datasets
(at the start of ``setup``, or from the cleaning stage before ``use_fold``), so the datasets
and ``transforms.json`` are built once, with the normalization the stage needs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger

from lifecycle.data.cleaning.kfold import out_of_fold_probabilities
from lifecycle.data.images import ImageClassificationDataModule
from lifecycle.data.tabular import TabularDataModule
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds
from lifecycle.models.vision import MLP
from lifecycle.stages.classification import ClassificationModule
from tests.conftest import quiet_trainer

NEEDS = DataNeeds(mean=[0.5], std=[0.25], normalization_source="pretrained/backbone")


class NeedyClassifier(ClassificationModule):
    """A stage that needs the images normalized as its (pretend) pretrained backbone was."""

    def data_needs(self) -> DataNeeds:
        return NEEDS


def needy_model() -> NeedyClassifier:
    return NeedyClassifier(MLP(in_features=64, hidden=[8]), num_classes=10)


def count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    build = ImageClassificationDataModule._build_datasets

    def counted(self):
        calls.append(1)
        return build(self)

    monkeypatch.setattr(ImageClassificationDataModule, "_build_datasets", counted)
    return calls


def test_fit_builds_the_datasets_once_with_the_stages_normalization(tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    data = ImageClassificationDataModule("digits", batch_size=16, train_subset=32)
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(tmp_path, logger=logger, max_steps=1, limit_val_batches=0)
    trainer.fit(needy_model(), datamodule=data)
    assert len(calls) == 1
    assert data.mean == [0.5] and data.std == [0.25]
    saved = json.loads((tmp_path / "run" / "version_0" / "transforms.json").read_text())
    assert saved["mean"] == [0.5] and saved["std"] == [0.25]
    expected = (data.splits["train"].x[:3].astype(np.float32) / 255 - 0.5) / 0.25
    got = data.split_dataset("train").tensor[:3].permute(0, 2, 3, 1).numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_a_configured_normalization_is_kept_with_a_warning(caplog):
    data = ImageClassificationDataModule("digits", mean=[0.1], std=[0.3], train_subset=32)
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.images"):
        data.apply_data_needs(NEEDS)
    assert "differs from the one pretrained/backbone was trained with" in caplog.text
    assert "keeping the configured one" in caplog.text
    data.setup("fit")
    assert data.mean == [0.1] and data.std == [0.3]
    assert data.state_dict()["mean"] == [0.1]


def test_needs_that_come_after_the_datasets_are_built_are_refused():
    data = ImageClassificationDataModule("digits", train_subset=32)
    data.setup("fit")
    computed = data.mean
    with pytest.raises(ConfigError, match="was set up .* before the stage asked for the normal"):
        data.apply_data_needs(NEEDS)
    assert data.mean == computed
    data.apply_data_needs(DataNeeds(mean=computed, std=data.std))  # the same: nothing to do
    data.apply_data_needs(DataNeeds())


def test_tables_refuse_an_image_normalization_and_accept_empty_needs():
    data = TabularDataModule("diabetes")
    data.apply_data_needs(DataNeeds())
    with pytest.raises(
        ConfigError, match=r"normalized as pretrained/backbone .* TabularDataModule"
    ):
        data.apply_data_needs(NEEDS)
    with pytest.raises(ConfigError, match="teacher's own tokenizer"):
        data.apply_data_needs(DataNeeds(teacher_tokenizer="some/tokenizer"))


def test_kfold_folds_train_with_the_fold_models_normalization(tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    data = ImageClassificationDataModule("digits", batch_size=32)
    records = data.cleaning_records()
    records = records.take(
        np.concatenate([np.flatnonzero(records.labels == c)[:6] for c in range(10)])
    )
    trainer = {
        "max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
        "default_root_dir": str(tmp_path),
    }  # fmt: skip
    probs = out_of_fold_probabilities(needy_model(), data, records, folds=2, trainer_kwargs=trainer)
    assert probs.shape == (60, 10)
    assert len(calls) == 2  # once per fold, by use_fold; fit's setup builds nothing more
    assert data.mean == [0.5] and data.std == [0.25]
    val = data.splits["val"]
    expected = (val.x[:2].astype(np.float32) / 255 - 0.5) / 0.25
    got = data.split_dataset("val").tensor[:2].permute(0, 2, 3, 1).numpy()
    assert np.allclose(got, expected, atol=1e-5)
