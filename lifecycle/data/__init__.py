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

__all__ = [
    "BUILTIN_DATASETS",
    "DataValidationError",
    "DatasetNotFoundError",
    "ImageClassificationDataModule",
    "LoadedDataset",
    "Split",
    "TabularDataModule",
    "load_dataset",
]
