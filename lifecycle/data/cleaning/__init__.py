"""The cleaning stage: validation, exact and near duplicates, leakage, and label issues by
confident learning on out-of-fold probabilities from K-fold Lightning training.

``lifecycle clean --config recipes/<dataset>/clean.yaml`` runs :class:`DataCleaner`; DataModules
take its ``manifest.csv`` as ``cleaned_manifest``.
"""

from lifecycle.data.cleaning.duplicates import (
    exact_duplicates,
    near_duplicate_image_pairs,
    near_duplicate_text_pairs,
)
from lifecycle.data.cleaning.kfold import out_of_fold_probabilities
from lifecycle.data.cleaning.label_issues import LabelIssues, find_label_issues
from lifecycle.data.cleaning.manifest import apply_manifest, read_manifest, write_manifest
from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.cleaning.stage import CleaningResult, DataCleaner, Finding

__all__ = [
    "CleaningRecords",
    "CleaningResult",
    "DataCleaner",
    "Finding",
    "LabelIssues",
    "apply_manifest",
    "exact_duplicates",
    "find_label_issues",
    "near_duplicate_image_pairs",
    "near_duplicate_text_pairs",
    "out_of_fold_probabilities",
    "read_manifest",
    "write_manifest",
]
