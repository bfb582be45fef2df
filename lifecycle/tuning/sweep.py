"""``lifecycle tune sweep``: an Optuna study over any fields of a ``fit`` recipe.

.. code-block:: bash

    lifecycle tune sweep --config recipes/fashion_mnist/classify.yaml \\
        --sweep recipes/fashion_mnist/sweep.yaml [--workers 2] [--storage URL] [--trials N]

Each trial is a normal ``lifecycle fit`` run of the recipe with the trial's values as overrides,
in its own folder ``<root>/trial_NNNN/version_0`` (config.yaml, metrics.csv, checkpoints), its
value the best of the sweep's ``metric`` over its validations. The study's sampler (TPE by
default) and pruner (median by default, through :class:`~lifecycle.tuning.pruning.TrialPruning`)
are Optuna's. At the end, ``<root>`` holds ``best.yaml`` (the best trial's values as a config to
add: ``lifecycle fit --config RECIPE --config <root>/best.yaml``), ``trials.csv``,
``summary.json`` and the plots of Optuna's matplotlib visualizations (``history.png``,
``importance.png``, ``slices.png``) with ``choices.png``, the best value each choice of a
categorical reached (the optimizer comparison).

**Before any trial runs**, the sweep file is checked (:func:`~lifecycle.tuning.space.load_sweep`)
and then every searched field against the recipe: the recipe's own parser (``--print_config``)
is given each choice and both ends of each range, so an unknown field or class, or a value the
field's type refuses, is an error naming the parameter and the fields there are.

**Scale and faults.** The study is a database (:mod:`lifecycle.tuning.storage`):
``<root>/study.db`` by default; ``--storage`` takes any SQLAlchemy URL or a journal file, and the
same command on other machines with the same ``--storage`` joins the study. ``--workers N`` runs N
worker processes here (each with its share of the CPU threads). On one machine a lock
(``<root>/ask.lock``) makes counting the study's trials and starting a new one one step, so the
study ends with exactly ``trials`` finished trials (complete, pruned or failed). A trial that
fails (an error, a NaN metric) is recorded as failed with its reason (its ``error`` attribute,
shown in the table) and the study goes on. A killed sweep resumes with the same command: the
trials it left running are marked failed (``interrupted``) and queued again with the same
values, and only the missing trials run. On a shared storage the trials of a dead machine are
found by Optuna's heartbeat instead, after a minute.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError
from lifecycle.pipeline.runner import (
    ConfigRefused,
    StageCommands,
    die_with_parent,
    exclusive_lock,
    print_config,
    scoped_environment,
)
from lifecycle.tuning.finders import several_devices
from lifecycle.tuning.overrides import short_field, write_override_file
from lifecycle.tuning.pruning import PRUNED_FILE, trial_environment
from lifecycle.tuning.space import Sweep, field_hint, load_sweep
from lifecycle.tuning.storage import default_storage, open_storage

HIGHER_IS_BETTER = ("acc", "f1", "auroc", "auc", "precision", "recall", "r2", "top", "map", "iou")
ASK_LOCK = "ask.lock"
SWEEP_LOCK = "sweep.lock"
BEST_FILE = "best.yaml"


@dataclass
class SweepRun:
    """One ``lifecycle tune sweep`` command: what it searches, where, and how.

    Attributes:
        sweep: the parsed sweep file.
        recipe_args: the recipe's part of the command line (``--config`` and overrides), given
            to every trial's ``fit``.
        root: the sweep's folder.
        storage: the study's storage URL.
        study_name: the study's name in that storage.
        metric, direction: what the study optimizes.
        launch: ``inprocess`` (each trial in the worker's process) or ``subprocess`` (each trial
            its own ``lifecycle fit``, for a recipe that starts several processes itself).
        local: the storage is the sweep folder's own file (no other machine uses it).
        config: the recipe's resolved config.
        worker: this process's index among the sweep's workers (``--workers`` here, or
            ``SLURM_PROCID`` on a cluster), added to the sampler's seed.
    """

    sweep: Sweep
    recipe_args: list[str]
    root: Path
    storage: str
    study_name: str
    metric: str
    direction: str
    launch: str = "inprocess"
    local: bool = True
    config: dict = field(default_factory=dict)
    worker: int = 0

    def trial_args(self, number: int, values: dict[str, Any]) -> list[str]:
        return [
            "fit",
            *self.recipe_args,
            *self.sweep.overrides(values),
            "--test_after_fit=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={self.root}",
            f"--run_name={trial_name(number)}",
            "--run_version=0",
        ]

    def trial_folder(self, number: int) -> Path:
        return self.root / trial_name(number) / "version_0"


def trial_name(number: int) -> str:
    return f"trial_{number:04d}"


# ------------------------------------------------------------------------------ before any trial
def default_metric(config: dict) -> tuple[str, str]:
    """``(metric, direction)`` from the recipe's model: its ``monitor`` init argument or class
    attribute (default ``val/loss``), maximized when its name says higher is better."""
    import importlib

    model = config.get("model") or {}
    monitor = (model.get("init_args") or {}).get("monitor")
    if not monitor and isinstance(model.get("class_path"), str):
        module, _, name = model["class_path"].rpartition(".")
        with contextlib.suppress(ImportError, AttributeError, ValueError):
            value = getattr(getattr(importlib.import_module(module), name), "monitor", None)
            monitor = value if isinstance(value, str) else None
    monitor = monitor or "val/loss"
    return monitor, direction_of(monitor)


def direction_of(metric: str) -> str:
    """``maximize`` for a metric whose name says higher is better (``val/accuracy``,
    ``val/f1``, ``val/top1``), else ``minimize``."""
    last = metric.rsplit("/", 1)[-1].lower()
    return "maximize" if last.startswith(HIGHER_IS_BETTER) else "minimize"


def check_fields(
    sweep: Sweep, commands: StageCommands, recipe_args: list[str], config: dict
) -> int:
    """Give the recipe's parser every choice and both ends of every range (with the other
    parameters at their first value), so that a field or class the recipe does not have, or a
    value its type refuses, is found before any trial runs. Returns the parses made.

    Raises:
        ConfigError: naming the parameter, the value, the parser's message and the fields
            there are where the path left the recipe.
    """
    first = {}
    for param in sweep.params:
        first[param.field] = (
            first[param.same_as] if param.kind == "same_as" else param.examples()[0]
        )
    checks: list[tuple[str, dict]] = [("", dict(first))]
    for param in sweep.params:
        for value in param.examples()[1:]:
            values = dict(first)
            values[param.field] = value
            for other in sweep.params:  # copies follow what they copy
                if other.kind == "same_as":
                    values[other.field] = values[other.same_as]
            checks.append((param.field, values))
    for name, values in checks:
        try:
            print_config(commands, ["fit", *recipe_args, *sweep.overrides(values)])
        except (ConfigRefused, ConfigError) as refused:
            culprit = name or _first_refused(sweep, commands, recipe_args, values) or "params"
            hint = field_hint(config, culprit) if culprit in values else ""
            shown = f" = {json.dumps(values[culprit])}" if culprit in values else ""
            raise ConfigError(
                f"{sweep.source}: params.{culprit}{shown}: the recipe refuses it: {refused}"
                + (f"\n{hint}." if hint else "")
                + "\nFix: a field of the recipe's config (`lifecycle fit --config RECIPE "
                "--print_config` lists them) with values its type takes."
            ) from None
    return len(checks)


def _first_refused(sweep, commands, recipe_args, values) -> str | None:
    """The first parameter that, given alone, the recipe refuses."""
    for param in sweep.params:
        alone = {param.field: values[param.field]}
        if param.kind == "same_as":
            alone = {param.same_as: values[param.same_as], **alone}
        try:
            print_config(commands, ["fit", *recipe_args, *sweep.overrides(alone)])
        except (ConfigRefused, ConfigError):
            return param.field
    return None


def _launch(config: dict) -> str:
    several = several_devices(config.get("trainer") or {})
    return "subprocess" if several else "inprocess"


# ---------------------------------------------------------------------------------- the study
def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our line says why
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def create_study(run: SweepRun):
    """The run's study, made or loaded (``load_if_exists``), checked to be this sweep's.

    Raises:
        ConfigError: a study of that name exists in the storage with another search or
            direction.
    """
    import optuna

    _quiet_optuna()
    seed = run.sweep.seed + run.worker  # workers sharing a study draw different values
    sampler = (
        # constant_liar: a worker asking while others run counts their trials as poor ones,
        # so it does not pick the same neighbourhood again (Optuna's advice for shared studies)
        optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        if run.sweep.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    from lifecycle.tuning.pruning import build_pruner

    study = optuna.create_study(
        study_name=run.study_name,
        storage=open_storage(run.storage),
        sampler=sampler,
        pruner=build_pruner(run.sweep.pruner),
        direction=run.direction,
        load_if_exists=True,
    )
    identity = {
        "params": [p.field for p in run.sweep.params],
        "metric": run.metric,
        "recipe_args": run.recipe_args,
    }
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", identity)
    elif stored != identity or study.direction.name.lower() != run.direction:
        raise ConfigError(
            f"the study `{run.study_name}` in {run.storage} was made by another sweep "
            f"(params {stored.get('params')}, metric {stored.get('metric')}, recipe "
            f"{' '.join(stored.get('recipe_args', []))}). Fix: give this sweep its own "
            "--study name or --root, or resume that one with its own command."
        )
    return study


def _retried(trials) -> set[int]:
    """Numbers of the trials queued again: by :func:`requeue_interrupted` (``retry_of``) or
    by Optuna's heartbeat on a shared storage (``retry_history``)."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get("retry_history", []))
        if "retry_of" in trial.user_attrs:
            numbers.add(trial.user_attrs["retry_of"])
    return numbers


def counted(trials) -> int:
    """The trials that count towards the study's ``trials``: finished, running or queued, less
    the failed ones that were queued again (the retry counts instead)."""
    from optuna.trial import TrialState

    retried = _retried(trials)
    return sum(
        1
        for t in trials
        if t.state != TrialState.FAIL
        or (t.number not in retried and not t.user_attrs.get("interrupted"))
    )


def requeue_interrupted(study) -> list[int]:
    """Mark the trials that a killed sweep left running as failed (``interrupted``) and queue
    each again with the values it had drawn (``retry_of``: its number). Call it only when no
    worker can be running them (the sweep's own storage, its lock held). Returns their
    numbers."""
    import optuna
    from optuna.trial import TrialState

    from lifecycle.compat import optuna_trial_id

    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        live = optuna.trial.Trial(study, optuna_trial_id(trial))
        live.set_user_attr("interrupted", True)
        live.set_user_attr("error", "interrupted: the sweep stopped while this trial ran")
        study.tell(trial.number, state=TrialState.FAIL)
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={"retry_of": trial.number},
            )
        )
        numbers.append(trial.number)
    return numbers


# ---------------------------------------------------------------------------------- the trials
def best_value(metrics_csv: Path, metric: str, direction: str) -> float | None:
    """The best value of ``metric`` in a run's ``metrics.csv`` (``None`` when it was never
    logged; NaN when every logged value was NaN)."""
    if not metrics_csv.is_file():
        return None
    values = []
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            text = row.get(metric)
            if text not in (None, ""):
                values.append(float(text))
    if not values:
        return None
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan")
    return max(finite) if direction == "maximize" else min(finite)


class TrialFailed(Exception):
    """A trial that ended without a value (its reason is its ``error`` attribute)."""


def run_trial(run: SweepRun, commands: StageCommands, trial, release=None) -> float:
    """Optuna's objective: draw the trial's values, run its ``fit``, return its best metric.

    Raises:
        optuna.TrialPruned: the pruner stopped it (its run folder has ``PRUNED``).
        TrialFailed: the run failed, or its metric was never logged or was NaN (the reason
            is the trial's ``error`` attribute).
    """
    import optuna

    from lifecycle.compat import optuna_trial_id

    if release is not None:
        release()  # the trial exists now: another worker may count it and ask for the next
    values: dict[str, Any] = {}
    for param in run.sweep.params:
        values[param.field] = param.suggest(trial, values)
    folder = run.trial_folder(trial.number)
    trial.set_user_attr("folder", str(folder))
    env = trial_environment(
        run.storage, run.study_name, optuna_trial_id(trial), run.metric, run.sweep.pruner, 1
    )
    args = run.trial_args(trial.number, values)
    began = time.perf_counter()
    error = _run_fit(run, commands, args, env, folder)
    trial.set_user_attr("seconds", round(time.perf_counter() - began, 2))
    if error is not None:
        trial.set_user_attr("error", error[:2000])
        raise TrialFailed(error)
    if (folder / PRUNED_FILE).is_file():
        pruned = json.loads((folder / PRUNED_FILE).read_text())
        trial.set_user_attr("pruned_at", pruned.get("step"))
        raise optuna.TrialPruned(f"pruned after validation {pruned.get('step')}")
    value = best_value(folder / "metrics.csv", run.metric, run.direction)
    if value is None or not math.isfinite(value):
        reason = (
            f"{run.metric} was never logged (the recipe's model logs other metrics: see "
            f"{folder / 'metrics.csv'})"
            if value is None
            else f"{run.metric} was NaN at every validation (the loss diverged)"
        )
        trial.set_user_attr("error", reason)
        raise TrialFailed(reason)
    return value


def _run_fit(run: SweepRun, commands: StageCommands, args, env, folder: Path) -> str | None:
    """Run a trial's ``fit``; the error's message when it failed, else ``None``."""
    if run.launch == "inprocess":
        try:
            with scoped_environment(env), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                commands.run(args)
        except Exception as error:  # noqa: BLE001 - a failed trial is recorded, the study goes on
            kind, message, _ = commands.describe(error)
            return f"{kind.rsplit('.', 1)[-1]}: {message}"
        except SystemExit as done:  # the parser refused it
            return f"the command exited with status {done.code}"
        return None
    done = subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        env={**os.environ, **env},
        preexec_fn=die_with_parent,
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return None
    failed = folder / "FAILED"
    if failed.is_file():
        kind, _, message = failed.read_text().partition("\n")
        return f"{kind.rsplit('.', 1)[-1]}: {message.strip()}"
    return f"`lifecycle fit` exited with status {done.returncode}: {done.stderr.strip()[-500:]}"


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                fcntl.flock(handle, fcntl.LOCK_UN)
                released = True

        try:
            yield release
        finally:
            release()


def work(run: SweepRun, commands: StageCommands, study, announce=print) -> int:
    """One worker: run trials until the study has its ``trials`` (counted and started in one
    step under ``<root>/ask.lock``). Returns the trials this worker ran."""
    from optuna.trial import TrialState

    _quiet_optuna()
    ran = 0
    while True:
        with _file_lock(run.root / ASK_LOCK) as release:
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if counted(trials) >= run.sweep.trials and not waiting:
                return ran
            asked: list[int] = []

            def objective(trial, asked=asked, release=release):
                asked.append(trial.number)
                return run_trial(run, commands, trial, release)

            study.optimize(
                objective,
                n_trials=1,
                catch=(Exception,),
                gc_after_trial=True,
            )
        ran += 1
        mine = [t for t in study.get_trials(deepcopy=False) if t.number in asked]
        if mine:
            announce(trial_line(run, mine[0]))


def trial_line(run: SweepRun, trial) -> str:
    """``trial 3 [complete] val/accuracy 0.8731 (41.2 s) optimizer=adam lr=0.0012``."""
    state = trial.state.name.lower()
    value = f" {run.metric} {trial.value:.4f}" if trial.value is not None else ""
    seconds = trial.user_attrs.get("seconds")
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    params = " ".join(f"{short_field(k)}={_show(v)}" for k, v in trial.params.items())
    error = f" error: {trial.user_attrs['error'][:200]}" if trial.user_attrs.get("error") else ""
    return f"trial {trial.number} [{state}]{value}{took} {params}{error}"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -------------------------------------------------------------------------------- the results
def config_values(run: SweepRun, trial) -> dict[str, Any]:
    """A trial's values by field, as config values (a choice's name -> its value; copies
    filled in), in the sweep file's order."""
    values: dict[str, Any] = {}
    for param in run.sweep.params:
        if param.kind == "same_as":
            values[param.field] = values.get(param.same_as)
        elif param.field in trial.params:
            values[param.field] = param.value_of(trial.params[param.field])
    return values


def summarize(run: SweepRun, study) -> dict:
    """Write ``best.yaml``, ``trials.csv``, ``summary.json`` and the plots into the sweep's
    folder; return the summary."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    states = {
        s.name.lower(): sum(t.state == s for t in finished) for s in TrialState if s.is_finished()
    }
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    with open(run.root / "trials.csv", "w", newline="") as handle:
        fields = ["number", "state", "value", "seconds", "pruned_at", "error", "folder"]
        names = [p.field for p in run.sweep.params if p.kind != "same_as"]
        writer = csv.writer(handle)
        writer.writerow(fields + names)
        for t in finished:
            attrs = t.user_attrs
            writer.writerow([t.number, t.state.name.lower(), t.value, attrs.get("seconds"),
                             attrs.get("pruned_at"), attrs.get("error", ""), attrs.get("folder", "")]
                            + [t.params.get(n, "") for n in names])  # fmt: skip
    summary: dict[str, Any] = {
        "study": run.study_name,
        "storage": run.storage,
        "metric": run.metric,
        "direction": run.direction,
        "trials": len([t for t in finished if t.number not in _retried(trials)]),
        "states": states,
        "seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in finished), 1),
        "best": None,
        "best_by_choice": best_by_choice(run, finished),
    }
    if complete:
        best = study.best_trial
        values = config_values(run, best)
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "folder": best.user_attrs.get("folder"),
        }
        command = " ".join(
            ["lifecycle fit", *run.recipe_args, "--config", str(run.root / BEST_FILE)]
        )
        write_override_file(
            run.root / BEST_FILE,
            values,
            [
                f"The best of {len(finished)} trials of the sweep {run.sweep.source}: trial "
                f"{best.number}, {run.metric} {best.value:.4f} ({run.direction}).",
                "Add it to the recipe:",
                f"  {command}",
            ],
        )
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["plots"] = [str(p) for p in plot_study(run, study, summary)]
    return summary


def best_by_choice(run: SweepRun, finished) -> dict[str, dict[str, float]]:
    """For each categorical parameter, the best value each of its choices reached over the
    complete trials (the optimizer comparison of a sweep over ``optimizer``)."""
    from optuna.trial import TrialState

    better = max if run.direction == "maximize" else min
    out: dict[str, dict[str, float]] = {}
    for param in run.sweep.params:
        if param.kind != "categorical":
            continue
        reached: dict[str, float] = {}
        for t in finished:
            if t.state == TrialState.COMPLETE and param.field in t.params:
                name = t.params[param.field]
                reached[name] = better(reached.get(name, t.value), t.value)
        out[param.field] = {name: reached[name] for name in param.choices if name in reached}
    return out


def plot_study(run: SweepRun, study, summary: dict) -> list[Path]:
    """Optuna's matplotlib plots of the study (the optimization history; with two complete
    trials or more the parameter importances and slices) and ``choices.png``."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as views

    written: list[Path] = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots = [("history.png", views.plot_optimization_history)]
    if len(complete) >= 2:
        plots += [
            ("importance.png", views.plot_param_importances),
            ("slices.png", views.plot_slice),
        ]
    for name, plot in plots:
        # Optuna's plots set the ggplot style for the whole process: rc_context undoes it
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore")
            try:
                axes = plot(study, target_name=run.metric)
            except (ValueError, RuntimeError) as error:  # e.g. importances of one value only
                print(f"tune sweep: {name} not drawn: {error}")
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        panels = len([a for a in figure.axes if a.get_label() != "<colorbar>"])
        figure.set_size_inches(max(6.4, 4.2 * panels), 4.8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tight_layout and a colorbar's axes
            figure.savefig(run.root / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(run.root / name)
    comparisons = {k: v for k, v in summary["best_by_choice"].items() if v}
    if comparisons:
        figure, axes = plt.subplots(
            1, len(comparisons), figsize=(5.5 * len(comparisons), 3.8), squeeze=False
        )
        for ax, (field_name, reached) in zip(axes[0], comparisons.items(), strict=True):
            names = list(reached)
            ax.bar(names, [reached[n] for n in names], color="tab:blue")
            low = min(reached.values())
            high = max(reached.values())
            ax.set_ylim(
                low - 0.1 * (high - low or abs(high) or 1),
                high + 0.1 * (high - low or abs(high) or 1),
            )
            ax.set_title(f"best {run.metric} by {short_field(field_name)}")
            for i, n in enumerate(names):
                ax.annotate(
                    f"{reached[n]:.4f}", (i, reached[n]), ha="center", va="bottom", fontsize=8
                )
            ax.tick_params(axis="x", rotation=30)
        figure.tight_layout()
        figure.savefig(run.root / "choices.png", dpi=110)
        plt.close(figure)
        written.append(run.root / "choices.png")
    return written


def print_table(run: SweepRun, study) -> None:
    """The trials as a table: number, state, value, time, each parameter, the error."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    names = [p.field for p in run.sweep.params if p.kind != "same_as"]
    table = Table(title=f"sweep {run.study_name}: {run.metric} ({run.direction})", box=box.SQUARE)
    for column in ("trial", "state", run.metric, "s", *(short_field(n) for n in names), "why"):
        table.add_column(column, overflow="fold")
    best = None
    with contextlib.suppress(ValueError):
        best = study.best_trial.number
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        value = f"{t.value:.4f}" if t.value is not None else ""
        seconds = t.user_attrs.get("seconds")
        why = t.user_attrs.get("error", "")
        if t.user_attrs.get("pruned_at"):
            why = f"pruned after validation {t.user_attrs['pruned_at']}"
        row = [f"{t.number}{' *' if t.number == best else ''}", t.state.name.lower(), value,
               f"{seconds:.0f}" if seconds is not None else "",
               *(_show(t.params.get(n, "")) for n in names), why[:120]]  # fmt: skip
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)


# ------------------------------------------------------------------------------------ command
def default_root(recipe_args: list[str], suffix: str = "-sweep") -> Path:
    """``runs/<recipe folder>-<recipe file><suffix>`` of the last ``--config`` given."""
    configs = [a.split("=", 1)[1] for a in recipe_args if a.startswith("--config=")]
    configs += [recipe_args[i + 1] for i, a in enumerate(recipe_args[:-1]) if a == "--config"]
    path = Path(configs[-1]) if configs else Path("sweep")
    stem = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    return Path("runs") / f"{stem}{suffix}"


def _parse_options(args: list[str]):
    import argparse

    parser = argparse.ArgumentParser(
        prog="lifecycle tune sweep",
        allow_abbrev=False,
        description="An Optuna study over fields of a fit recipe: each trial a `lifecycle fit` "
        "run with the trial's values; the best as an override file. Any other option is the "
        "recipe's (--config RECIPE, --trainer.max_epochs 3, ...).",
    )
    parser.add_argument("--sweep", required=True, help="the search space and study settings (YAML)")
    parser.add_argument("--workers", type=int, default=1, help="trial processes on this machine")
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="finished trials to end with (default: the sweep file's)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="the study's storage: an SQLAlchemy URL or a journal file (default: <root>/study.db)",
    )
    parser.add_argument(
        "--study", default=None, help="the study's name (default: the folder's name)"
    )
    parser.add_argument(
        "--root", default=None, help="the sweep's folder (default: runs/<recipe>-sweep)"
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    known, rest = parser.parse_known_args(args)
    if known.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {known.workers}.")
    if known.trials is not None and known.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {known.trials}.")
    if not any(a == "--config" or a.startswith("--config=") for a in rest):
        raise ConfigError(
            "give the recipe the trials train: --config recipes/<dataset>/<recipe>.yaml, e.g. "
            "lifecycle tune sweep --config recipes/fashion_mnist/classify.yaml --sweep "
            "recipes/fashion_mnist/sweep.yaml"
        )
    return known, rest


def sweep_command(args: list[str], commands: StageCommands) -> int:
    """``lifecycle tune sweep --config RECIPE --sweep SWEEP.yaml [--workers N] [--trials N]
    [--storage URL] [--study NAME] [--root DIR] [recipe overrides]`` (see the module
    docstring). Returns the exit status.

    Raises:
        ConfigError, MissingFileError: a mistake in the sweep file or the recipe, found before
            any trial runs.
    """
    from dataclasses import replace

    known, recipe_args = _parse_options(args)
    sweep = load_sweep(known.sweep)
    if known.trials is not None:
        sweep = replace(sweep, trials=known.trials)
    try:
        config = print_config(commands, ["fit", *recipe_args])
    except (ConfigRefused, ConfigError) as refused:
        raise ConfigError(f"the recipe ({' '.join(recipe_args)}): {refused}") from None
    metric = sweep.metric or default_metric(config)[0]
    root = Path(known.root) if known.root else default_root(recipe_args)
    run = SweepRun(
        sweep=sweep,
        recipe_args=recipe_args,
        root=root.resolve(),
        storage=known.storage or default_storage(root),
        study_name=known.study or root.resolve().name,
        metric=metric,
        direction=sweep.direction or direction_of(metric),
        launch=_launch(config),
        local=known.storage is None,
        config=config,
        worker=known.worker if known.worker is not None else _cluster_rank(),
    )
    if known.worker is not None:
        work(run, commands, create_study(run))
        return 0
    parses = check_fields(sweep, commands, recipe_args, config)
    run.root.mkdir(parents=True, exist_ok=True)
    with _sweep_lock(run.root):
        study = create_study(run)
        if run.local:
            requeued = requeue_interrupted(study)
            if requeued:
                print(f"tune sweep: trials {', '.join(map(str, requeued))} were left running "
                      "by a stopped sweep: marked interrupted and queued again")  # fmt: skip
        done = counted(study.get_trials(deepcopy=False))
        print(
            f"tune sweep: {len(sweep.params)} parameters of {sweep.source} checked against the "
            f"recipe ({parses} parses); study `{run.study_name}` in {run.storage}: "
            f"{min(done, sweep.trials)} of {sweep.trials} trials there, {run.metric} to "
            f"{run.direction}; {known.workers} worker{'s' if known.workers > 1 else ''}, "
            f"trials {run.launch}",
            flush=True,
        )
        if known.workers == 1:
            work(run, commands, study)
        else:
            _run_workers(args, known.workers)
        print_table(run, study)
        summary = summarize(run, study)
    best = summary["best"]
    if best is None:
        print(
            f"tune sweep: no trial completed ({summary['states']}); see {run.root / 'trials.csv'}"
        )
        return 1
    print(f"best: trial {best['number']}, {run.metric} {best['value']:.4f}; wrote "
          f"{run.root / BEST_FILE}, trials.csv, summary.json, "
          f"{', '.join(Path(p).name for p in summary['plots'])} in {run.root}")  # fmt: skip
    return 0


def _sweep_lock(root: Path):
    return exclusive_lock(
        root / SWEEP_LOCK,
        f"another `lifecycle tune sweep` is using {root} now. Fix: wait for it, join its study "
        "from another folder with the same --storage and --study, or give this sweep its own "
        "--root.",
    )


def _cluster_rank() -> int:
    """This task's index on a cluster (``SLURM_PROCID``, else torchrun's ``RANK``), 0 alone."""
    for name in ("SLURM_PROCID", "RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _run_workers(args: list[str], workers: int) -> None:
    """``workers`` processes of this command with ``--worker``, each with its share of the
    CPU threads; waits for all of them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "tune", "sweep", *args, "--worker", str(index)],
            env=env,
            preexec_fn=die_with_parent,
        )
        for index in range(workers)
    ]
    codes = [p.wait() for p in processes]
    failed = [c for c in codes if c != 0]
    if failed:
        print(
            f"tune sweep: {len(failed)} of {workers} workers exited with status {failed}",
            file=sys.stderr,
        )
