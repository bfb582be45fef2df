"""Data flows one way for texts: a stage's DataNeeds (a distillation teacher's tokenizer) reach
the text DataModule at the start of ``setup`` (or before ``use_fold``), before any text is
encoded; the teacher's ids are added only when its vocabulary differs from the student's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lifecycle.data.text import CorpusDataModule, TextClassificationDataModule
from lifecycle.data.tokenization import load_tokenizer, train_tokenizer
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds
from tests.data.test_text import sentiment_rows, write_csv


def texts_csv(tmp_path):
    return write_csv(tmp_path / "t.csv", sentiment_rows(60))


def datamodule(path, **kwargs):
    return TextClassificationDataModule(
        str(path), vocab_size=200, min_frequency=1, batch_size=4, **kwargs
    )


class TeacherStage:
    """What a distillation stage declares (lifecycle.interfaces.DeclaresDataNeeds)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def data_needs(self) -> DataNeeds:
        return DataNeeds(teacher_tokenizer=self.tokenizer)


def attach(dm, stage):
    dm.trainer = SimpleNamespace(lightning_module=stage, loggers=[])  # what setup reads


def test_setup_reads_the_stages_teacher_tokenizer_before_encoding(tmp_path):
    path = texts_csv(tmp_path)
    teacher = train_tokenizer([t for t, _ in sentiment_rows(60)], "wordpiece", 120, 1)
    teacher.save_pretrained(tmp_path / "teacher")
    dm = datamodule(path)
    attach(dm, TeacherStage(str(tmp_path / "teacher")))  # a folder: loaded by the DataModule
    dm.setup("fit")
    assert dm.teacher_tokenizes_differently
    batch = dm.example_batch("train", size=3)
    assert {"teacher_input_ids", "teacher_attention_mask"} <= set(batch)
    student = dm.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    taught = teacher.batch_decode(batch["teacher_input_ids"], skip_special_tokens=True)
    assert [t.replace(" ", "") for t in student] == [t.replace(" ", "") for t in taught]
    assert "teacher_input_ids" not in dm.example_batch("val", size=2)  # training only


def test_a_teacher_with_the_students_vocabulary_adds_nothing_and_allows_augmentation(tmp_path):
    path = texts_csv(tmp_path)
    first = datamodule(path)
    first.setup()
    first.tokenizer.save_pretrained(tmp_path / "same")
    dm = datamodule(path, tokenizer=str(tmp_path / "same"), augment_mask=0.2)
    dm.apply_data_needs(DataNeeds(teacher_tokenizer=load_tokenizer(tmp_path / "same")))
    dm.setup()
    assert not dm.teacher_tokenizes_differently
    assert "teacher_input_ids" not in dm.example_batch("train", size=2)


def test_token_augmentation_with_a_teacher_that_tokenizes_differently_is_refused(tmp_path):
    teacher = train_tokenizer([t for t, _ in sentiment_rows(60)], "wordpiece", 120, 1)
    dm = datamodule(texts_csv(tmp_path), augment_swap=0.1)
    attach(dm, TeacherStage(teacher))
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"could not see the same augmented text.*augment_mask"):
        dm.split_dataset("train")


def test_needs_given_before_use_fold_reach_the_fold_datasets(tmp_path):
    teacher = train_tokenizer([t for t, _ in sentiment_rows(60)], "wordpiece", 120, 1)
    dm = datamodule(texts_csv(tmp_path))
    records = dm.cleaning_records()
    dm.apply_data_needs(DataNeeds(teacher_tokenizer=teacher))
    dm.use_fold(records, list(range(0, 30)), list(range(30, 40)))
    assert "teacher_input_ids" in dm.example_batch("train", size=2)
    dm.apply_data_needs(DataNeeds())  # a stage without a teacher: the ids go again
    assert "teacher_input_ids" not in dm.example_batch("train", size=2)


def test_the_corpus_refuses_a_teacher_and_ignores_image_normalization(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(t for t, _ in sentiment_rows(40)) + "\n")
    dm = CorpusDataModule(str(path), vocab_size=200, min_frequency=1, batch_size=4)
    dm.apply_data_needs(DataNeeds(mean=[0.5], std=[0.2], normalization_source="a backbone"))
    attach(dm, TeacherStage("any/teacher"))
    with pytest.raises(ConfigError, match="CorpusDataModule serves unlabeled text.*"
                       "lifecycle.data.TextClassificationDataModule"):  # fmt: skip
        dm.setup("fit")
    assert not dm.texts  # refused before anything was read
