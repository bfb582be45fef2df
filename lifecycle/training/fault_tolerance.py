"""Losing nothing to a killed job: mid-epoch checkpoints and an exact resume.

A run killed with ``kill -9`` (preemption, out-of-memory killer, a node lost) and restarted with
``lifecycle fit --config ... --ckpt_path last`` continues from its newest checkpoint and, with
deterministic settings, ends with the metrics of a run that was never interrupted. What makes it
exact:

- :class:`ResumableCheckpoint` writes ``last-step.ckpt`` every ``every_n_train_steps`` steps or
  ``every_minutes`` minutes, mid-epoch, and stores the random states (torch, numpy, Python) in
  every checkpoint, restored just before the first resumed step, so dropout draws the same masks;
- the toolkit's DataLoaders (:class:`~lifecycle.data.loading.ResumableDataLoader`) tell
  Lightning how many batches of the epoch were trained on, and pass over them on resume; their
  shuffle depends on ``(seed, epoch)`` only;
- Lightning restores the weights, the optimizer, the LR schedule and its loop counters;
- :class:`ResumedCSVLogger` appends to the run's ``metrics.csv`` (Lightning's CSV logger deletes
  an existing one), so the log is whole from the first step.

Checkpoints are written atomically: Lightning saves through an fsspec transaction, which writes
a temporary file and renames it over the old one, so a kill while writing leaves the previous
checkpoint whole (tested). They load with ``torch.load(weights_only=True)``: the random states
are kept as tensors and plain numbers for that reason.
"""

from __future__ import annotations

import csv
import random
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lifecycle.compat import load_pending_train_loader_states


def random_states() -> dict[str, Any]:
    """The global random states of torch, numpy and Python, in types that
    ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],  # fmt: skip
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


class ResumableCheckpoint(ModelCheckpoint):
    """Save ``last-step.ckpt`` mid-epoch, and the random states in every checkpoint.

    ``--ckpt_path last`` picks the newest of ``last.ckpt`` (the end-of-epoch checkpoint of the
    default ``ModelCheckpoint``) and ``last-step.ckpt``. Every rank restores the random states of
    rank 0; Lightning seeds all ranks alike, so they are the same on every rank anyway.

    Args:
        every_n_train_steps: save every this many optimizer steps.
        every_minutes: or every this many minutes of training (used when
            ``every_n_train_steps`` is not set).
        dirpath: the folder (default: the run's ``checkpoints/``).
    """

    CHECKPOINT_NAME_LAST = "last-step"

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        every_minutes: float | None = 10.0,
        dirpath: str | None = None,
    ):
        if every_n_train_steps is None and every_minutes is None:
            raise ValueError("ResumableCheckpoint needs `every_n_train_steps` or `every_minutes`.")
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"`every_n_train_steps` must be >= 1, got {every_n_train_steps}.")
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=(
                None if every_n_train_steps is not None else timedelta(minutes=every_minutes)
            ),
        )
        self._states_to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "random_states": random_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._states_to_restore = state.pop("random_states", None)
        super().load_state_dict(state)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # the metrics logged so far reach the disk with each checkpoint, not only every
        # `flush_logs_every_n_steps`: a killed run keeps its log up to its checkpoint
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        restore_loader_states(trainer)
        # after the DataLoaders were set up, just before the first resumed step
        if self._states_to_restore is not None:
            set_random_states(self._states_to_restore)
            self._states_to_restore = None


def restore_loader_states(trainer) -> bool:
    """Give the training DataLoaders their saved position when Lightning did not; returns
    whether it had to.

    Lightning#20550 (fix proposed in Lightning PR #21765, not released): a module whose
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (every schedule sized
    by the run, e.g. OneCycleLR) makes Lightning build the training DataLoaders before the
    checkpoint is restored, and the DataLoaders' saved states are then never loaded: a resumed
    run would replay the epoch from its first batch. This does what that PR does: load the
    pending states, set the epoch, and start the iterator again. A no-op when nothing is
    pending (a fresh run, or a Lightning with the fix). No public API reaches the pending
    states, so it lives in :func:`lifecycle.compat.load_pending_train_loader_states`; a
    ``torchdata`` ``StatefulDataLoader`` would not help: the states are never handed to any
    loader.
    """
    return load_pending_train_loader_states(trainer)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but one that keeps the ``metrics.csv`` it finds (Lightning's
    deletes it) and goes on after its rows, with its columns."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(next(csv.reader(file), []))


class ResumedCSVLogger(CSVLogger):
    """The CSV logger of a resumed run: it writes into the run's existing ``version_N`` and
    appends to its ``metrics.csv`` instead of deleting it, so the log of a killed run is kept up
    to its last checkpoint (``ResumableCheckpoint`` flushes the log with every checkpoint). Same
    arguments as ``CSVLogger``; ``lifecycle fit --ckpt_path last`` uses it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
