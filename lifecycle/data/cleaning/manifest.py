"""The cleaned-dataset manifest: which records a DataModule keeps, with which label and weight.

``lifecycle clean`` writes ``manifest.csv`` with one row per kept record::

    source,label,weight,original_label
    fashion-mnist:train[0],Ankle boot,1.0,Ankle boot
    fashion-mnist:train[7],Shirt,1.0,T-shirt/top      <- relabeled
    fashion-mnist:train[9],Dress,0.2,Dress            <- down-weighted

``source`` is the record's name as the DataModule reads it (a file path, ``file:line``, or
``dataset:split[i]``), ``label`` the class name to train with. Records the data holds but the
manifest does not were removed by the cleaning run (its ``removed.csv`` says why). Any
DataModule given ``cleaned_manifest: path`` applies it with :func:`apply_manifest`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifecycle.data.datasets import DatasetNotFoundError, DataValidationError

log = logging.getLogger(__name__)

FIELDS = ("source", "label", "weight", "original_label")


@dataclass
class ManifestRow:
    source: str
    label: str
    weight: float = 1.0
    original_label: str = ""


def write_manifest(rows: list[ManifestRow], path: str | Path) -> Path:
    """Write ``rows`` as ``manifest.csv``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        for row in rows:
            writer.writerow([row.source, row.label, f"{row.weight:.6g}", row.original_label])
    return path


def read_manifest(path: str | Path) -> dict[str, ManifestRow]:
    """Read a manifest into ``{source: row}``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataValidationError: a column is missing, a weight is not a number >= 0, or a source repeats.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(
            f"cleaned_manifest {path.resolve()} does not exist. Fix: give the manifest.csv that "
            "`lifecycle clean` wrote into its run folder."
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("source", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataValidationError(
                f"{path} lacks column(s) {missing}; it has {reader.fieldnames}. A manifest has "
                f"columns {', '.join(FIELDS)}."
            )
        rows: dict[str, ManifestRow] = {}
        for line, record in enumerate(reader, start=2):
            source = record["source"]
            if source in rows:
                raise DataValidationError(
                    f"{path}, line {line}: source {source!r} is listed twice."
                )
            try:
                weight = float(record.get("weight") or 1.0)
            except ValueError:
                weight = -1.0
            if not weight >= 0:
                raise DataValidationError(
                    f"{path}, line {line}: weight {record.get('weight')!r} is not a number >= 0."
                )
            rows[source] = ManifestRow(
                source, record["label"], weight, record.get("original_label") or record["label"]
            )
    return rows


def apply_manifest(
    sources: list[str],
    class_names: list[str],
    manifest: dict[str, ManifestRow],
    where: str,
    path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match a dataset's records to a manifest.

    Args:
        sources: the dataset's record names, in order.
        class_names: the classes labels are indices into.
        manifest: from :func:`read_manifest`.
        where: the dataset, for messages.
        path: the manifest file, for messages.

    Returns:
        ``(kept, labels, weights)``: indices of the records to keep, their class indices and weights.

    Raises:
        DataValidationError: the manifest names records the data lacks (it was made for other
            data), or labels that are not classes of this data.
    """
    position = {source: i for i, source in enumerate(sources)}
    unknown = [s for s in manifest if s not in position]
    named = f"The cleaned manifest {path}" if path is not None else "The cleaned manifest"
    if unknown:
        raise DataValidationError(
            f"{named} lists {len(unknown)} records that {where} does not hold; the "
            f"first is {unknown[0]!r} (its records look like {sources[0]!r}). Fix: use the "
            "manifest that `lifecycle clean` wrote for this dataset, with the same loading "
            "options."
        )
    index = {name: i for i, name in enumerate(class_names)}
    bad = sorted({row.label for row in manifest.values() if row.label not in index})
    if bad:
        raise DataValidationError(
            f"{named} has labels {bad} that are not classes of {where} ({', '.join(class_names)})."
        )
    kept = np.array(sorted(position[s] for s in manifest), dtype=np.int64)
    labels = np.array([index[manifest[sources[i]].label] for i in kept], dtype=np.int64)
    weights = np.array([manifest[sources[i]].weight for i in kept], dtype=np.float32)
    return kept, labels, weights


def unaccounted(
    sources: list[str], manifest: dict[str, ManifestRow], path: str | Path
) -> list[str]:
    """The ``sources`` a manifest neither keeps nor, in the ``removed.csv`` beside it, lists as
    removed: records the cleaning run never saw (it cleaned a ``subset``, or held out another
    test split: other ``seed``/``test_fraction``). Empty when there is no ``removed.csv``.
    """
    removed_csv = Path(path).expanduser().parent / "removed.csv"
    if not removed_csv.is_file():
        return []
    with open(removed_csv, newline="", encoding="utf-8") as f:
        removed = {row["source"] for row in csv.DictReader(f) if row.get("source")}
    return [s for s in sources if s not in manifest and s not in removed]


def manifest_for_training(
    path: str | Path, train_sources: list[str], test_sources: set[str], dataset: str
) -> dict[str, ManifestRow]:
    """Read the manifest at ``path`` for the training records ``train_sources``: the rows that
    name test records are left out (the test split stays as in the original data), and both
    those rows and the training records the cleaning run never saw (:func:`unaccounted`) are
    reported with a warning naming the first and the fix."""
    manifest = read_manifest(path)
    unseen = unaccounted(train_sources, manifest, path)
    if unseen:
        log.warning(
            f"{dataset}: {len(unseen)} training records are neither in the cleaned manifest nor "
            f"in its removed.csv (first: {unseen[0]}), so they are left out: the cleaning run "
            "did not see them (it cleaned a `subset`, or held out another test split). Fix: "
            "clean with this run's `seed` and `test_fraction`."
        )
    ignored = [s for s in manifest if s in test_sources]
    if ignored:
        log.warning(
            f"{dataset}: the cleaned manifest lists {len(ignored)} test records (first: "
            f"{ignored[0]}); the test split is kept as in the original data, so their rows are "
            "ignored."
        )
    return {s: row for s, row in manifest.items() if s not in test_sources}
