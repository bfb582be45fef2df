"""The cleaning stage: validation, exact and near duplicates, leakage, and label issues by
confident learning on out-of-fold probabilities from K-fold Lightning training.

``lifecycle clean --config recipes/<dataset>/clean.yaml`` runs :class:`DataCleaner`; DataModules
take its ``manifest.csv`` as ``cleaned_manifest``.

This package only re-exports; nothing inside :mod:`lifecycle` imports it (modules import the
defining submodule). The names are loaded on first use (:pep:`562`), so a DataModule that reads
a manifest (:mod:`lifecycle.data.cleaning.manifest`) does not load the whole stage with it.
"""

from lifecycle.lazy import lazy_exports

_EXPORTS = {
    "exact_duplicates": "lifecycle.data.cleaning.duplicates",
    "near_duplicate_image_pairs": "lifecycle.data.cleaning.duplicates",
    "near_duplicate_text_pairs": "lifecycle.data.cleaning.duplicates",
    "out_of_fold_probabilities": "lifecycle.data.cleaning.kfold",
    "LabelIssues": "lifecycle.data.cleaning.label_issues",
    "find_label_issues": "lifecycle.data.cleaning.label_issues",
    "apply_manifest": "lifecycle.data.cleaning.manifest",
    "read_manifest": "lifecycle.data.cleaning.manifest",
    "write_manifest": "lifecycle.data.cleaning.manifest",
    "CleaningRecords": "lifecycle.data.cleaning.records",
    "CleaningResult": "lifecycle.data.cleaning.stage",
    "DataCleaner": "lifecycle.data.cleaning.stage",
    "Finding": "lifecycle.data.cleaning.stage",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
