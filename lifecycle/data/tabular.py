"""``TabularDataModule``: CSV tables and arrays for regression and classification."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lifecycle.data.datasets import (
    DataIssue,
    DataValidationError,
    LoadedDataset,
    Split,
    load_dataset,
)
from lifecycle.data.loading import SplitDataModule
from lifecycle.data.splits import split_indices
from lifecycle.data.validation import (
    check_finite,
    check_labels,
    check_not_empty,
    summarize_issues,
    write_issues,
)

log = logging.getLogger(__name__)


class TabularDataset(Dataset):
    """Feature rows and targets as dict samples; batches are sliced at once (``__getitems__``)."""

    def __init__(self, features: np.ndarray, targets: np.ndarray, target_key: str):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        dtype = torch.long if target_key == "label" else torch.float32
        self.targets = torch.as_tensor(targets, dtype=dtype)
        self.target_key = target_key

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[i], self.target_key: self.targets[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"features": self.features[index], self.target_key: self.targets[index]}


class TabularDataModule(SplitDataModule):
    """Tables of numeric features with a regression target or class labels.

    Batches are ``{"features": float (B, F), "target": float (B,)}`` for regression and
    ``{"features": float (B, F), "label": long (B,)}`` for classification.

    Args:
        dataset: a built-in name (``diabetes``) or a path: a ``.csv`` with a header row, or an
            ``.npz`` with ``x`` (N, F) and ``y`` (and optionally ``x_test``, ``y_test``).
        task: ``"regression"`` or ``"classification"``.
        target: the CSV target column (default: the last column).
        features: the CSV feature columns (default: all other columns).
        data_dir: where a built-in dataset's files are, when not in the default places.
        val_fraction: share of the training rows held out for validation (seeded; stratified
            for classification).
        test_fraction: share held out for testing when the data has no test split of its own.
        batch_size: rows per batch, or ``"full"`` for full-batch gradient descent.
        num_workers: DataLoader worker processes.
        standardize: z-score each feature with the training split's mean and std.
        missing: rows with missing feature values (empty CSV cells, NaN): ``"error"`` (stop,
            naming the count and the first row), ``"drop"`` the rows, or fill each gap with its
            column's ``"median"`` or most frequent value (``"mode"``) over the training rows.
            Rows with a missing target are dropped unless ``"error"``, which stops at the first
            such row. Every dropped or filled row is listed in the run folder's
            ``data_issues.csv``.
        seed: seed of the splits.

    A stage's :class:`~lifecycle.interfaces.DataNeeds` must be empty: a pretrained image
    backbone's normalization or a teacher's tokenizer cannot apply to feature columns, so
    :meth:`apply_data_needs` (SplitDataModule's) refuses them with a ``ConfigError`` instead
    of ignoring them (features are standardized by ``standardize`` alone).

    Raises:
        DataValidationError: NaN/Inf features or targets (with ``missing: error``; Inf always),
            labels out of range, empty splits — each naming the count and the first offending row.
        ConfigError: the stage needs the data in a form tables cannot take (see above).
    """

    def __init__(
        self,
        dataset: str = "diabetes",
        task: Literal["regression", "classification"] = "regression",
        target: str | None = None,
        features: list[str] | None = None,
        data_dir: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        batch_size: int | Literal["full"] = 32,
        num_workers: int = 0,
        standardize: bool = True,
        missing: Literal["error", "drop", "median", "mode"] = "error",
        seed: int = 42,
    ):
        super().__init__()
        if task not in ("regression", "classification"):
            raise ValueError(f"`task` must be 'regression' or 'classification', got {task!r}.")
        if missing not in ("error", "drop", "median", "mode"):
            raise ValueError(
                f"`missing` must be 'error', 'drop', 'median' or 'mode', got {missing!r}."
            )
        self.missing = missing
        self.issues: list[DataIssue] = []
        self.save_hyperparameters()
        self.dataset, self.task, self.target, self.features = dataset, task, target, features
        self.data_dir, self.val_fraction, self.test_fraction = data_dir, val_fraction, test_fraction
        self.batch_size, self.num_workers, self.standardize, self.seed = (
            batch_size,
            num_workers,
            standardize,
            seed,
        )
        self.target_key = "label" if task == "classification" else "target"
        self.class_names: list[str] | None = None
        self.num_classes: int | None = None
        self.feature_names: list[str] | None = None
        self.target_mean: float | None = None
        self.target_std: float | None = None

    def load(self) -> LoadedDataset:
        kwargs = (
            {"target": self.target, "features": self.features}
            if str(self.dataset).endswith(".csv")
            else {}
        )
        return load_dataset(self.dataset, self.data_dir, kind="tabular", **kwargs)

    def _targets(self, data: LoadedDataset) -> LoadedDataset:
        """Turn text or numeric targets into class indices or floats, for every split."""
        splits = [s for s in (data.train, data.test) if s is not None]
        if self.task == "classification":
            if data.class_names is None:
                values = np.concatenate([s.y for s in splits])
                try:
                    keys = sorted({float(v) for v in values})
                    as_key = float
                except ValueError:
                    keys, as_key = sorted({str(v) for v in values}), str
                labels = {k: i for i, k in enumerate(keys)}
                data.class_names = [
                    str(int(k)) if isinstance(k, float) and k.is_integer() else str(k) for k in keys
                ]
                for s in splits:
                    s.y = np.array([labels[as_key(v)] for v in s.y], dtype=np.int64)
        else:
            for s in splits:
                try:
                    s.y = s.y.astype(np.float32)
                except ValueError as err:
                    bad = next(i for i, v in enumerate(s.y) if not _is_number(v))
                    raise DataValidationError(
                        f"Regression targets must be numbers; {s.source(bad)} has {s.y[bad]!r}. "
                        "Fix: set `task: classification` for class labels, or clean the target column."
                    ) from err
        return data

    def _missing_targets(self, split: Split) -> Split:
        """Leave out rows whose target is empty or NaN (listed), before targets are parsed."""
        empty = np.array([_is_missing(v) for v in split.y], dtype=bool)
        if not empty.any():
            return split
        self.issues += [
            DataIssue(split.source(i), "missing target", "dropped") for i in np.flatnonzero(empty)
        ]
        return split.take(np.flatnonzero(~empty))

    def _refuse_missing_targets(self, split: Split) -> None:
        """Under ``missing: error``, raise on an empty or NaN target (it would otherwise become
        a class ``""`` or an unparseable number)."""
        empty = np.flatnonzero([_is_missing(v) for v in split.y])
        if len(empty):
            raise DataValidationError(
                f"{self.dataset}: {len(empty)} of {len(split)} rows have an empty or NaN target; "
                f"the first is {split.source(int(empty[0]))}. Fix: fill in the target, or set "
                "`missing: drop` to leave such rows out (each is listed in the run folder's "
                "data_issues.csv)."
            )

    def _fill_missing(self, data: LoadedDataset) -> LoadedDataset:
        """Apply ``missing`` to rows with NaN features: drop them, or fill from training columns."""
        names = data.feature_names or [f"x{i}" for i in range(data.train.x.shape[1])]
        train_x = data.train.x
        fill = None
        if self.missing in ("median", "mode"):
            fill = np.zeros(train_x.shape[1], dtype=np.float32)
            for j in range(train_x.shape[1]):
                column = train_x[:, j][np.isfinite(train_x[:, j])]
                if not len(column):
                    raise DataValidationError(
                        f"Feature column '{names[j]}' has no values at all in the training rows: "
                        "nothing to fill it with. Fix: leave it out of `features`."
                    )
                fill[j] = (
                    np.median(column) if self.missing == "median" else Counter(column.tolist()).most_common(1)[0][0]
                )  # fmt: skip
        splits = []
        for split in (data.train, data.test):
            if split is None:
                splits.append(None)
                continue
            gaps = np.isnan(split.x)
            rows = np.flatnonzero(gaps.any(axis=1))
            for i in rows:
                columns = ", ".join(names[j] for j in np.flatnonzero(gaps[i]))
                if fill is None:
                    self.issues.append(
                        DataIssue(split.source(i), "missing feature value", "dropped", columns)
                    )
                else:
                    values = ", ".join(f"{names[j]}={fill[j]:g}" for j in np.flatnonzero(gaps[i]))
                    self.issues.append(
                        DataIssue(split.source(i), "missing feature value", f"filled ({self.missing})", values)
                    )  # fmt: skip
            if fill is None:
                split = split.take(np.flatnonzero(~gaps.any(axis=1)))
            else:
                split.x = np.where(gaps, fill[None, :], split.x).astype(np.float32)
            splits.append(split)
        data.train, data.test = splits
        return data

    def setup(self, stage: str | None = None) -> None:
        # refuses a stage's image normalization or teacher tokenizer (SplitDataModule's
        # apply_data_needs): features are standardized by `standardize`, never by a backbone
        self.apply_stage_needs()
        if self.splits:
            return
        data = self.load()
        if self.missing != "error":
            data.train = self._missing_targets(data.train)
            if data.test is not None:
                data.test = self._missing_targets(data.test)
            data = self._fill_missing(self._targets(data))
            for line in summarize_issues(self.issues):
                log.warning(line)
            out = self._run_dir()
            if out is not None and self.issues:
                write_issues(self.issues, out / "data_issues.csv")
        else:
            for split in (data.train, data.test):
                if split is not None:
                    self._refuse_missing_targets(split)
            data = self._targets(data)
        for name, split in (("train", data.train), ("test", data.test)):
            if split is None:
                continue
            check_not_empty(split, name)
            fix = (
                "set `data.init_args.missing: drop` (or `median` / `mode`) to drop or fill rows "
                "with empty or NaN cells, each listed in the run's data_issues.csv; Inf values "
                "must be corrected in the file"
            )
            check_finite(split.x, "features", split, fix)
            if self.task == "regression":
                check_finite(split.y, "targets", split, fix)
        train = data.train
        stratify = train.y if self.task == "classification" else None
        if data.test is None:
            keep, held = split_indices(
                len(train), self.test_fraction, self.seed, stratify, name="test"
            )
            train, test = train.take(keep), train.take(held)
        else:
            test = data.test
        stratify = train.y if self.task == "classification" else None
        keep, held = split_indices(len(train), self.val_fraction, self.seed, stratify, name="val")
        train, val = train.take(keep), train.take(held)
        self.splits = {"train": train, "val": val, "test": test}
        for name, split in self.splits.items():
            check_not_empty(
                split, name, "Fix: lower `val_fraction`/`test_fraction` or give more rows."
            )
        if self.task == "classification":
            self.class_names = data.class_names or [str(i) for i in range(int(train.y.max()) + 1)]
            self.num_classes = len(self.class_names)
            for name, split in self.splits.items():
                check_labels(split, self.num_classes, name)
        else:
            self.target_mean, self.target_std = float(train.y.mean()), float(train.y.std() + 1e-8)
        self.feature_names = data.feature_names or [f"x{i}" for i in range(train.x.shape[1])]
        mean = train.x.mean(axis=0) if self.standardize else 0.0
        std = train.x.std(axis=0) + 1e-8 if self.standardize else 1.0
        self._datasets = {
            name: TabularDataset((s.x - mean) / std, s.y, self.target_key)
            for name, s in self.splits.items()
        }

    @property
    def num_features(self) -> int:
        return self.splits["train"].x.shape[1]


def _is_missing(v) -> bool:
    """An empty cell or a NaN."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return True
    try:
        return bool(np.isnan(float(v)))
    except (TypeError, ValueError):
        return False


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
