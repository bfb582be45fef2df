"""Out-of-fold predicted probabilities by K-fold training with Lightning.

Confident learning needs, for every record, class probabilities from a model that never trained
on it. :func:`out_of_fold_probabilities` splits the records into ``K`` stratified folds and, for
each, trains a fresh copy of the configured LightningModule on the other ``K - 1`` with its own
``Trainer`` (the recipe's strategy, precision and budget), then predicts the held-out fold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from sklearn.model_selection import StratifiedKFold

from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.datasets import DataValidationError
from lifecycle.errors import ConfigError
from lifecycle.evaluation.report import gathered_predictions
from lifecycle.interfaces import AcceptsDataNeeds, check_data_needs_met, stage_data_needs


class HeldOutProbabilities(BasePredictionWriter):
    """Collects a fold's held-out class probabilities from ``predict``, from every rank under
    a multi-process strategy, in the held-out dataset's order (each record once, the padding
    of uneven shards left out): :attr:`probabilities`, ``float32`` (N, K), set on every rank;
    ``None`` until then (and in the main process of a spawn- or fork-started strategy, where
    the callback runs in the started processes)."""

    def __init__(self):
        super().__init__(write_interval="epoch")
        self.probabilities: np.ndarray | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        table = gathered_predictions(trainer, predictions, batch_indices, all_ranks=True)
        if not table["columns"]:
            self.probabilities = np.zeros((0, 0), dtype=np.float32)
            return
        probs = table["columns"]["probabilities"].float().numpy()
        index = table["index"]
        if any(i is None for i in index):  # one process, no batch indices: loader order
            index = list(range(len(index)))
        order = np.argsort(np.asarray(index), kind="stable")
        if len(set(index)) != len(index):
            raise RuntimeError(
                f"{len(index) - len(set(index))} held-out records were predicted twice: the "
                "validation DataLoader must not repeat records."
            )
        self.probabilities = probs[order]


def check_folds(labels: np.ndarray, folds: int, class_names: list[str] | None = None) -> None:
    """Raise a clear error when ``K``-fold training cannot work on these labels: fewer than two
    folds, a single class, or a class with fewer records than folds."""
    if folds < 2:
        raise DataValidationError(f"`folds` must be at least 2, got {folds}.")
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    name = lambda c: class_names[c] if class_names and c < len(class_names) else str(c)  # noqa: E731
    if len(present) < 2:
        raise DataValidationError(
            f"All {len(labels)} records have one label ({name(int(present[0]))}): label issues need "
            "at least two classes. Fix: check the label column, or set `find_label_issues: false`."
        )
    rare = [c for c in present if counts[c] < folds]
    if rare:
        listed = ", ".join(f"{name(int(c))} ({counts[c]})" for c in rare)
        raise DataValidationError(
            f"{len(rare)} classes have fewer records than `folds: {folds}`: {listed}. Each fold "
            f"must hold every class. Fix: lower `folds` to at most {int(counts[present].min())}, "
            "or add records to those classes."
        )


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, held_out)`` index pairs of a seeded, stratified ``folds``-fold split."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def out_of_fold_probabilities(
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    records: CleaningRecords,
    folds: int = 5,
    seed: int = 42,
    trainer_kwargs: dict[str, Any] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities of every record, each from a model trained without it.

    Args:
        model: the untrained LightningModule; fold ``k`` trains ``copy.deepcopy(model)``.
        datamodule: a DataModule with ``use_fold(records, train_idx, val_idx)`` (the
            ``lifecycle`` classification DataModules), so each fold is batched, augmented and
            tokenized as in training. The fold model's
            :class:`~lifecycle.interfaces.DataNeeds` (a pretrained backbone's normalization)
            are handed to its ``apply_data_needs`` before each ``use_fold``.
        records: the records (from the DataModule's ``cleaning_records()``).
        folds: ``K``.
        seed: seed of the fold split, and of each fold's training (``seed + k``).
        trainer_kwargs: arguments of each fold's ``lightning.Trainer`` (``max_epochs``,
            ``accelerator``, ``precision``, ``strategy``, ...); loggers and checkpoints are
            turned off. Objects among them (a strategy) are deep-copied for each fold. Under a
            multi-process strategy started as scripts (DDP, FSDP2) every rank gets all the
            probabilities.
        on_fold: called with ``(k, folds)`` before fold ``k`` trains (progress reporting).

    Returns:
        ``float32`` (N, K) probabilities, rows in ``records`` order.

    Raises:
        DataValidationError: a single class, or a class with fewer records than folds.
        ConfigError: the model needs the data in a form the DataModule cannot give; a
            strategy whose predictions do not come back to this process (started by spawn or
            fork).
    """
    labels = np.asarray(records.labels, dtype=np.int64)
    check_folds(labels, folds, records.class_names)
    kwargs = {
        "enable_model_summary": False,
        **(trainer_kwargs or {}),
        "logger": False,
        "enable_checkpointing": False,
    }
    probs: np.ndarray | None = None
    rng = np.random.default_rng(seed)
    for k, (train_idx, held_idx) in enumerate(fold_indices(labels, folds, seed)):
        if on_fold is not None:
            on_fold(k, folds)
        # held-out records in a seeded random order, so evaluation batches mix classes
        held_idx = rng.permutation(held_idx)
        L.seed_everything(seed + k, verbose=False)
        fold_model = copy.deepcopy(model)
        # the fold's data in the form its model needs, before use_fold builds the datasets
        needs = stage_data_needs(fold_model)
        check_data_needs_met(datamodule, needs, type(fold_model).__name__)
        if isinstance(datamodule, AcceptsDataNeeds):
            datamodule.apply_data_needs(needs)
        datamodule.use_fold(records, train_idx, held_idx)
        held_out = HeldOutProbabilities()
        # a fresh copy of the recipe's objects (a strategy) per fold: a Trainer binds its own
        fold_kwargs = {k: v if k == "callbacks" else copy.deepcopy(v) for k, v in kwargs.items()}
        callbacks = fold_kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
        fold_kwargs["callbacks"] = [*callbacks, held_out]
        trainer = L.Trainer(**fold_kwargs)
        trainer.fit(fold_model, datamodule=datamodule)
        trainer.predict(
            fold_model, dataloaders=datamodule.val_dataloader(), return_predictions=False
        )
        if held_out.probabilities is None:
            raise ConfigError(
                f"fold {k}: the held-out predictions did not come back from "
                f"`trainer.strategy` {type(trainer.strategy).__name__}: a strategy that starts "
                "its processes by spawn or fork keeps them in those processes. Fix: use "
                "recipes/strategies/ddp.yaml (processes started as scripts) or one device."
            )
        fold_probs = held_out.probabilities
        if len(fold_probs) != len(held_idx):
            raise RuntimeError(
                f"fold {k}: {len(fold_probs)} predictions for {len(held_idx)} held-out records; "
                "the validation DataLoader must not drop or repeat records."
            )
        if probs is None:
            probs = np.zeros((len(labels), fold_probs.shape[1]), dtype=np.float32)
        if fold_probs.shape[1] != len(records.class_names):
            raise DataValidationError(
                f"The model predicts {fold_probs.shape[1]} classes but the data has "
                f"{len(records.class_names)}. Fix: set `model.init_args.num_classes: "
                f"{len(records.class_names)}`."
            )
        probs[held_idx] = fold_probs
    return probs
