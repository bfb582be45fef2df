"""Data: built-in datasets and user files resolved offline, and the DataModules that batch them.

This package only re-exports (``lifecycle.data.ImageClassificationDataModule`` and the like, as
recipes name them); nothing inside the package imports it. The names are loaded on first use
(:pep:`562`), so importing a light submodule such as :mod:`lifecycle.data.splits` does not load
albumentations, transformers and every DataModule with it.
"""

import importlib

_EXPORTS = {
    "BUILTIN_DATASETS": "lifecycle.data.datasets",
    "DataIssue": "lifecycle.data.datasets",
    "DatasetNotFoundError": "lifecycle.data.datasets",
    "DataValidationError": "lifecycle.data.datasets",
    "LoadedDataset": "lifecycle.data.datasets",
    "Split": "lifecycle.data.datasets",
    "load_dataset": "lifecycle.data.datasets",
    "ImageClassificationDataModule": "lifecycle.data.images",
    "TabularDataModule": "lifecycle.data.tabular",
    "CorpusDataModule": "lifecycle.data.text.corpus",
    "TextClassificationDataModule": "lifecycle.data.text.classification",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lifecycle.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
