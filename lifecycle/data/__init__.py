"""Data: built-in datasets and user files resolved offline, and the DataModules that batch them."""

from lifecycle.data.datasets import (
    BUILTIN_DATASETS,
    DatasetNotFoundError,
    DataValidationError,
    LoadedDataset,
    Split,
    load_dataset,
)
from lifecycle.data.images import ImageClassificationDataModule
from lifecycle.data.tabular import TabularDataModule
from lifecycle.data.text import CorpusDataModule, TextClassificationDataModule

__all__ = [
    "BUILTIN_DATASETS",
    "CorpusDataModule",
    "DataValidationError",
    "DatasetNotFoundError",
    "ImageClassificationDataModule",
    "LoadedDataset",
    "Split",
    "TabularDataModule",
    "TextClassificationDataModule",
    "load_dataset",
]
