"""The sweep as a stage: ``lifecycle tune --config RECIPE --config TUNING.yaml``, and so a
``tune`` stage of a pipeline.

The recipe's ``tuning:`` section is a :class:`SweepStage`: the sweep file's keys (see
:mod:`lifecycle.tuning.space`) as typed arguments, plus ``workers`` and ``storage``::

    # lifecycle tune --config recipes/digits/classify.yaml --config recipes/digits/tune.yaml
    tuning:
      class_path: lifecycle.tuning.SweepStage
      init_args:
        trials: 8
        params:
          model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 0.03, log: true}

The stage writes into its run folder (``<default_root_dir>/<run_name>/version_N``) the recipe
its trials train (``recipe.yaml``: the resolved config less ``tuning`` and the run folder's
fields, so a pipeline's inputs, e.g. a pretrained backbone, are in it and no trial recomputes
them), the sweep (``sweep.yaml``), and then what ``lifecycle tune sweep`` writes: the study,
``trial_NNNN/`` folders, ``best.yaml``, ``trials.csv``, ``summary.json`` and the plots. Its
declared outputs make it a pipeline stage: ``best`` (a config to add: a later stage takes it as
``inputs: {config: tune.best}``), ``trials``, ``summary``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import yaml

from lifecycle.interfaces import StageOutput
from lifecycle.tuning.space import PrunerName, parse_sweep

# fields of the resolved config that are the tune stage's, not its trials'
NOT_FOR_TRIALS = ("tuning", "run_name", "run_version", "config", "ckpt_path", "weights_only")


class SweepStage:
    """An Optuna study over fields of the recipe it is part of (``tuning:``).

    Args:
        params: ``{field: search}`` as in a sweep file (a range, ``choices`` or ``same_as``).
        trials: finished trials the study ends with (pruned and failed ones count).
        metric: what the trials are judged by; default the model's ``monitor``.
        direction: ``maximize`` or ``minimize``; default from the metric.
        sampler: ``tpe`` or ``random``.
        seed: the sampler's seed.
        pruner: ``median``, ``successive_halving``, ``hyperband`` or ``none``.
        workers: trial processes on this machine.
        storage: the study's storage URL; default ``sqlite:///<run folder>/study.db``.
        study: the study's name in the storage; default the run folder's name.
    """

    outputs: ClassVar[dict[str, StageOutput]] = {
        "best": StageOutput(
            "best",
            "best.yaml",
            "the best trial's settings, a config to add (--config)",
            written_by="tune",
            kind="config",
        ),  # fmt: skip
        "trials": StageOutput("trials", "trials.csv", "every trial", written_by="tune"),
        "summary": StageOutput(
            "summary", "summary.json", "the best trial, states, times", written_by="tune"
        ),
    }

    def __init__(
        self,
        params: dict[str, dict],  # not dict[str, Any]: jsonargparse would expand a class_path
        trials: int = 20,
        metric: str | None = None,
        direction: Literal["maximize", "minimize"] | None = None,
        sampler: Literal["tpe", "random"] = "tpe",
        seed: int = 0,
        pruner: PrunerName = "median",
        workers: int = 1,
        storage: str | None = None,
        study: str | None = None,
    ):
        self.spec = {"trials": trials, "metric": metric, "direction": direction,
                     "sampler": sampler, "seed": seed, "pruner": pruner, "params": params}  # fmt: skip
        self.spec = {k: v for k, v in self.spec.items() if v is not None}
        self.sweep = parse_sweep(self.spec, source="tuning")  # its mistakes named now
        self.workers, self.storage, self.study = workers, storage, study

    def command_line(self, config_file: Path, out: Path) -> list[str]:
        """Write ``recipe.yaml`` (the trials' recipe, from the stage's resolved ``config.yaml``)
        and ``sweep.yaml`` into ``out``; return the ``lifecycle tune sweep`` arguments that run
        the study there."""
        config = yaml.safe_load(Path(config_file).read_text()) or {}
        recipe = {k: v for k, v in config.items() if k not in NOT_FOR_TRIALS}
        trainer = dict(recipe.get("trainer") or {})
        trainer.pop("default_root_dir", None)  # each trial: its folder under `out`
        recipe["trainer"] = trainer
        (out / "recipe.yaml").write_text(
            "# the recipe of every trial: the tune stage's config less `tuning` and its run "
            "folder\n" + yaml.safe_dump(recipe, sort_keys=False)
        )
        (out / "sweep.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))
        args = ["--config", str(out / "recipe.yaml"), "--sweep", str(out / "sweep.yaml"),
                "--root", str(out), "--workers", str(self.workers)]  # fmt: skip
        if self.storage:
            args += ["--storage", self.storage]
        if self.study:
            args += ["--study", self.study]
        return args
