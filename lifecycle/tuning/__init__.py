"""The tuning stage: ``lifecycle tune lr`` (Lightning's learning-rate range test), ``lifecycle
tune batch-size`` (the batch that fits or trains fastest) and ``lifecycle tune sweep`` (an Optuna
study over any fields of a recipe, pruned, shared by workers and machines through its storage).

- :mod:`lifecycle.tuning.space`: the sweep file (search space and study settings);
- :mod:`lifecycle.tuning.sweep`: the study, its trials and its results;
- :mod:`lifecycle.tuning.pruning`: :class:`~lifecycle.tuning.pruning.TrialPruning`, the
  ``lightning.pytorch`` pruning callback;
- :mod:`lifecycle.tuning.storage`: where a study lives (SQLite, any SQLAlchemy URL, a journal);
- :mod:`lifecycle.tuning.finders`: the learning-rate and batch-size finders;
- :mod:`lifecycle.tuning.overrides`: results as configs to add with ``--config``;
- :mod:`lifecycle.tuning.stage`: :class:`SweepStage`, the sweep as a recipe's ``tuning:``
  section (``lifecycle tune --config RECIPE --config TUNING.yaml``, a pipeline's ``tune`` stage);
- :mod:`lifecycle.tuning.command`: the ``lifecycle tune`` command line.

Optuna is the ``tuning`` extra (``pip install -e ".[tuning]"``), imported only by the sweep.
"""

from lifecycle.tuning.stage import SweepStage

__all__ = ["SweepStage"]
