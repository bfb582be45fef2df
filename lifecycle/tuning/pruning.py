"""Pruning a sweep's trial while it trains: :class:`TrialPruning`, a ``lightning.pytorch``
callback (Optuna's own, in ``optuna-integration``, reads a private attribute of Lightning's
Trainer and, under DDP, needs the trial object in every rank).

A trial's command learns which trial it is from the environment (``LIFECYCLE_TRIAL``, a JSON
object that :func:`trial_environment` writes: the study's storage and name, the trial's id, the
metric, the pruner), so the same mechanism serves a trial run in the sweep's process, one run as
its own ``lifecycle fit`` process, and every rank of a DDP trial (the ranks inherit it).
:func:`trial_callbacks` is what ``lifecycle fit`` adds to a run's callbacks: the callback when
the variable is set, nothing otherwise. Optuna is imported only then.

After each validation (not the sanity check) rank 0 reports the metric to the trial, as step
``k`` for the k-th validation of the run, and asks the pruner; the answer is broadcast, so every
rank stops at the same point (Optuna #6043: distributed trials). A pruned run stops training
through ``trainer.should_stop`` (an exception raised in a callback would mark the run FAILED)
and rank 0 writes ``PRUNED`` (JSON: the step, the value, the metric) into its run folder; the
sweep reads that file and records the trial as pruned.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

TRIAL_ENV = "LIFECYCLE_TRIAL"
PRUNED_FILE = "PRUNED"


def build_pruner(name: str, warmup: int = 1):
    """Optuna's pruner for a sweep file's ``pruner``.

    - ``median``: ``MedianPruner``, after ``warmup`` reports and 2 finished trials: a trial
      below the median of the earlier ones at the same validation stops (about half of them).
    - ``successive_halving``: ``SuccessiveHalvingPruner`` (the rule of ASHA), rungs at
      ``warmup``, 3x ``warmup``, 9x ...: a trial goes on past a rung only in the best third of
      the trials that reached it. Cheaper than the median when trials are short; on the
      tuning benchmark's recorded curves it ran 0.55-0.59 of the epochs against the median's
      0.62-0.70 (``benchmarks/results/tuning_limits.json``).
    - ``hyperband``: ``HyperbandPruner``: several successive-halving brackets of different
      first rungs (pays off when trials run many validations).
    - ``none``: ``NopPruner``.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, warmup), reduction_factor=3
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup))
    return optuna.pruners.NopPruner()


def trial_environment(
    storage: str, study: str, trial_id: int, metric: str, pruner: str, warmup: int
) -> dict[str, str]:
    """The environment that makes a ``lifecycle fit`` run the given trial of a study."""
    spec = {
        "storage": storage,
        "study": study,
        "trial_id": trial_id,
        "metric": metric,
        "pruner": pruner,
        "warmup": warmup,
    }
    return {TRIAL_ENV: json.dumps(spec)}


class TrialPruning(Callback):
    """Report a validation metric to an Optuna trial after each validation and stop the run
    when the study's pruner says so (see the module docstring).

    Args:
        storage: the study's storage URL (``sqlite:///...``, ``postgresql://...``) or a journal
            file (``*.log``).
        study: the study's name.
        trial_id: the trial's id in that storage.
        metric: the logged metric to report, e.g. ``val/accuracy``.
        pruner: ``median``, ``successive_halving``, ``hyperband`` or ``none``.
        warmup: reports before the median pruner may prune.
    """

    def __init__(
        self,
        storage: str,
        study: str,
        trial_id: int,
        metric: str,
        pruner: str = "median",
        warmup: int = 1,
    ) -> None:
        self.storage, self.study, self.trial_id = storage, study, trial_id
        self.metric, self.pruner, self.warmup = metric, pruner, warmup
        self.reports = 0
        self.pruned_at: int | None = None
        self._trial = None

    def _optuna_trial(self):
        if self._trial is None:
            import optuna

            from lifecycle.tuning.storage import open_storage

            loaded = optuna.load_study(
                study_name=self.study,
                storage=open_storage(self.storage),
                pruner=build_pruner(self.pruner, self.warmup),
            )
            self._trial = optuna.trial.Trial(loaded, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.reports += 1
        prune = False
        value = trainer.callback_metrics.get(self.metric)
        if trainer.is_global_zero and value is not None:
            number = float(value)
            if math.isfinite(number):  # a NaN is the objective's to judge, at the end
                trial = self._optuna_trial()
                trial.report(number, step=self.reports)
                prune = trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if not prune:
            return
        trainer.should_stop = True
        self.pruned_at = self.reports
        folder = trainer.log_dir
        if trainer.is_global_zero and folder:
            record: dict[str, Any] = {
                "step": self.reports,
                "epoch": trainer.current_epoch,
                "metric": self.metric,
                "value": float(value) if value is not None else None,
            }
            Path(folder, PRUNED_FILE).write_text(json.dumps(record) + "\n")


def trial_callbacks() -> list[Callback]:
    """``[TrialPruning(...)]`` when ``LIFECYCLE_TRIAL`` says this run is a sweep's trial, else
    ``[]`` (what ``lifecycle fit`` adds to each run's callbacks)."""
    text = os.environ.get(TRIAL_ENV)
    if not text:
        return []
    spec = json.loads(text)
    return [TrialPruning(**spec)]
