"""Data: built-in datasets and user files resolved offline, and the DataModules that batch them.

This package only re-exports (``lifecycle.data.ImageClassificationDataModule`` and the like, as
recipes name them); nothing inside the package imports it. The names are loaded on first use
(:pep:`562`), so importing a light submodule such as :mod:`lifecycle.data.splits` does not load
albumentations, transformers and every DataModule with it.
"""

from lifecycle.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
