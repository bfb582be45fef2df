"""The ``lifecycle`` command: one LightningCLI whose ``lifecycle --help`` lists six subcommands.

- ``lifecycle fit|validate|test|predict --config recipes/<dataset>/<stage>.yaml``: Lightning's
  four, on models and DataModules chosen by ``class_path`` (ours or the user's own), optimizers
  and schedulers likewise;
- ``lifecycle clean --config recipes/<dataset>/clean.yaml``: the cleaning stage
  (:class:`~lifecycle.data.cleaning.DataCleaner`, configured by the recipe's ``cleaning:``
  section) writes ``manifest.csv``, ``removed.csv``, ``findings.csv`` and its report into the run
  folder; DataModules train on the manifest (``--data.init_args.cleaned_manifest``);
- ``lifecycle augment [preview] --config RECIPE [--out grid.png] [--samples 8] [--views 5]
  [--split train]``: a grid of a recipe's images beside augmented versions of each.

Each subcommand is a method of :class:`LifecycleTrainer` (Lightning's four, plus ``clean`` and
``augment``) listed by :meth:`LifecycleCLI.subcommands`: LightningCLI makes the method's typed
arguments the subcommand's options and the first line of its docstring its line in ``--help``.
On top of LightningCLI this adds:

- a run folder ``<default_root_dir>/<run_name>/version_N`` holding the resolved ``config.yaml``,
  ``metrics.csv`` (CSVLogger; TensorBoard events too when ``tensorboard`` is installed),
  ``checkpoints/`` (``last`` at each epoch's end and ``last-step`` mid-epoch, see
  :mod:`lifecycle.training.fault_tolerance`, and the best by the metric the module declares as
  its ``monitor``, e.g. ``val/loss``), and after ``test``/``predict`` the reports of
  :mod:`lifecycle.evaluation`;
- ``fit --ckpt_path last`` resumes the newest ``version_N`` of the run in its own folder (its
  logs go on there), from its newest checkpoint;
- ``--test_after_fit true``: ``fit`` ends by testing the best checkpoint into the same folder;
- a rich progress bar and model summary, and ``seed_everything`` defaulting to 42;
- a mistake of the user's (a :class:`~lifecycle.errors.UserError`, also when jsonargparse,
  Lightning or a DataLoader worker raised it wrapped in another error) ends the command with
  ``lifecycle <subcommand>: error: <message>`` on stderr and exit status 2, without a traceback
  (``--debug`` or ``LIFECYCLE_DEBUG=1`` shows it); any other error keeps its traceback;
- a run that fails leaves a ``FAILED`` file (the error's type and message) in its run folder,
  and ``--ckpt_path last`` never resumes a run that has no checkpoint: with none to resume it is
  an error naming the folder it looked in, not a fresh run;
- a quiet start-up (:func:`quiet_startup`): none of Lightning's advertising tips, no torch
  deprecation warning raised inside Lightning, no FLOPs count that was never measured.

Each default callback is added only when the config does not already hold one of its kind,
so ``trainer.callbacks`` in a recipe can replace any of them.

Importing this module (the command's entry point) sets ``HF_HUB_OFFLINE=1`` and
``NO_ALBUMENTATIONS_UPDATE=1`` unless they are set already; ``import lifecycle`` does not.
"""

from __future__ import annotations

import os

# Offline by design: albumentations would check PyPI for updates on import, and transformers
# would retry the Hugging Face hub for 48 s before failing on a model name. Set here, before
# Lightning is imported: it imports torchmetrics, which imports transformers, and
# huggingface_hub reads HF_HUB_OFFLINE once, on import.
OFFLINE_ENVIRONMENT = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # `--tracking mlflow` sends no usage data
}
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Literal  # noqa: E402

from jsonargparse import Namespace  # noqa: E402
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import (  # noqa: E402
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import (  # noqa: E402
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from lifecycle.data.cleaning.stage import CleaningResult, DataCleaner  # noqa: E402
from lifecycle.errors import ConfigError, MissingFileError, UserError  # noqa: E402
from lifecycle.evaluation.report import EvaluationReport, PredictionWriter, run_dir  # noqa: E402
from lifecycle.pipeline.lineage import LineageCallback  # noqa: E402
from lifecycle.pipeline.tracking import stage_loggers  # noqa: E402
from lifecycle.training.fault_tolerance import ResumableCheckpoint, ResumedCSVLogger  # noqa: E402
from lifecycle.tuning.pruning import trial_callbacks  # noqa: E402
from lifecycle.tuning.stage import SweepStage  # noqa: E402


def _tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write events (``tensorboard`` or
    ``tensorboardX`` is installed), asked without importing either."""
    return any(
        importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX")
    )


PRESET_FOLDERS = ("strategies", "precision")


def default_run_name(config_paths: list[str]) -> str:
    """``recipes/fashion_mnist/classify.yaml`` -> ``fashion_mnist-classify``; ``lifecycle``
    without a config. Presets added with a second ``--config`` (``recipes/strategies/``,
    ``recipes/precision/``) do not rename the run."""
    if not config_paths:
        return "lifecycle"
    paths = [Path(str(p)) for p in config_paths]
    recipes = [p for p in paths if p.parent.name not in PRESET_FOLDERS]
    path = (recipes or paths)[-1]
    return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem


FAILED_FILE = "FAILED"
# ckpt_path values Lightning resolves itself (`last` is resolved by LifecycleCLI first)
_CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


def _reraised(text: str) -> tuple[str, str] | None:
    """``(type name, message)`` of a :class:`UserError` raised in another process (a DataLoader
    worker, a spawned rank) and sent back as traceback text: its last ``module.Class: `` line
    and what follows. Only classes already imported count, so reading the text imports
    nothing."""
    if "Traceback (most recent call last)" not in text:
        return None
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        name, sep, rest = lines[i].partition(": ")
        module, _, qualname = name.rpartition(".")
        kind = getattr(sys.modules.get(module), qualname, None) if sep else None
        if isinstance(kind, type) and issubclass(kind, UserError):
            return name, "\n".join([rest, *lines[i + 1 :]]).strip()
    return None


def describe_error(exception: BaseException) -> tuple[str, str, bool]:
    """``(type name, message, is_user_error)`` of what ``exception`` reports.

    A :class:`~lifecycle.errors.UserError` counts wherever it sits in the chain of causes
    (jsonargparse raises its own error from the one a class's ``__init__`` raised; an error in
    Lightning's teardown has the original as its context) or when another process sent it
    back as text (a DataLoader worker, a spawned DDP rank); its own type and message are
    returned then."""
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            name = f"{type(current).__module__}.{type(current).__qualname__}"
            name, message = _reraised(str(current)) or (name, str(current))
            return name, message, True
        current = current.__cause__ or current.__context__
    found = _reraised(str(exception))
    if found is not None:
        return *found, True
    name = f"{type(exception).__module__}.{type(exception).__qualname__}"
    return name, str(exception) or repr(exception), False


def user_error_message(exception: BaseException) -> str | None:
    """The message to show for ``exception`` when it is a mistake of the user's (see
    :func:`describe_error`), else ``None``."""
    _, message, is_user_error = describe_error(exception)
    return message if is_user_error else None


def write_failed(folder: str | os.PathLike, exception: BaseException) -> Path:
    """Write ``FAILED`` into a run folder: the error's type on the first line, then its message
    (a user error's own type and message when ``exception`` wraps one)."""
    name, message, _ = describe_error(exception)
    path = Path(folder) / FAILED_FILE
    path.write_text(f"{name}\n{message}\n")
    return path


def _csv_run_folder(trainer) -> Path | None:
    """The run folder of the trainer's CSV logger, when the run has created it."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and Path(logger.log_dir).is_dir():
            return Path(logger.log_dir)
    return None


class FailedRunMarker(Callback):
    """Marks a run folder whose command raised (or was interrupted) with a ``FAILED`` file
    holding the error's type and message, so a half-written folder never looks complete. A
    resumed run clears its folder's earlier mark once it is set up; a new failure writes it
    again."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        folder = _csv_run_folder(trainer) if trainer.is_global_zero else None
        if folder is not None:
            (folder / FAILED_FILE).unlink(missing_ok=True)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        folder = _csv_run_folder(trainer) if trainer.is_global_zero else None
        if folder is not None:
            write_failed(folder, exception)


def check_checkpoint_file(ckpt_path: str) -> None:
    """Refuse a ``--ckpt_path`` that is missing, or is a file that is no checkpoint (truncated
    by an interrupted copy or save, or another kind of file), before anything is built.

    A ``torch.save`` file is a zip archive (its directory at the end, so a truncated one is no
    longer a zip) or, from old torch versions, a pickle; a distributed checkpoint is a folder.

    Raises:
        MissingFileError: naming the path and the fix.
        UnsafeLoadError: the file would run code or build classes other than modules when
            unpickled (:func:`lifecycle.artifacts.check_checkpoint`).
    """
    path = Path(ckpt_path).expanduser()
    if "://" in ckpt_path or path.is_dir():
        return
    if not path.is_file():
        nearby = sorted(path.parent.glob("*.ckpt")) if path.parent.is_dir() else []
        hint = f" ({path.parent} holds: {', '.join(p.name for p in nearby[:5])})" if nearby else ""
        raise MissingFileError(
            f"--ckpt_path {ckpt_path}: no such file (looked for {path.resolve()}){hint}. Fix: give "
            "the path of an existing checkpoint, e.g. runs/<run_name>/version_N/checkpoints/"
            "last.ckpt, or `last` to resume the newest run of this recipe."
        )
    import zipfile

    with open(path, "rb") as file:
        head = file.read(2)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise MissingFileError(
            f"--ckpt_path {ckpt_path} is not a readable checkpoint ({path.stat().st_size} bytes, "
            "not the zip archive torch.save writes): it is truncated or corrupt, e.g. by an "
            "interrupted copy or save. Fix: copy it again, or give another checkpoint of the "
            "run (its checkpoints/ folder keeps `last.ckpt` and the best one)."
        )
    from lifecycle.artifacts import check_checkpoint

    # Lightning unpickles the file in full (weights_only off): refuse first, with a safe read,
    # a checkpoint that holds code or names classes that are not modules and their parts
    check_checkpoint(path)


# ------------------------------------------------------------------------------ a quiet start-up
# Lightning's info lines that advertise its cloud products ("💡 Tip: ... litlogger", "litmodels")
_TIP_PREFIX = "💡 Tip:"
# Lightning's rank_zero_info writes through one of these (whichever of the two was imported last)
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIX)


@contextlib.contextmanager
def quiet_startup():
    """While a command runs, leave out what a user cannot act on, each at its source:

    - Lightning's tips advertising litlogger/litmodels (an info line of every run): a
      :class:`logging.Filter` on Lightning's rank-zero loggers, for lines starting "💡 Tip:";
    - torch's ``FutureWarning`` that ``LeafSpec`` is deprecated, raised by Lightning's own
      ``lightning.pytorch.utilities._pytree`` and again wherever an object holding a
      ``LeafSpec`` is deep-copied (``copyreg``: the K-fold cleaning copies its fold trainers'
      settings); only a Lightning release can act on it: a warnings filter on that message and
      category.

    The filters are removed on exit. Two other sources are fixed where they arise:
    :meth:`LifecycleCLI.parse_arguments` (LightningCLI's warning about ``args`` beside a command
    line) and :class:`MeasuredModelSummary` (a FLOPs count that was never measured).
    """
    tips = _DropTips()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    for logger in loggers:
        logger.addFilter(tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(tips)


class MeasuredModelSummary(RichModelSummary):
    """Lightning's rich model summary without its FLOPs column and total when FLOPs were not
    measured: Lightning counts them only for a module with an ``example_input_array`` and
    shows ``0`` for every other one. A module that has one gets Lightning's table as it is."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size,
                total_training_modes, total_flops, **summarize_kwargs,
            )  # fmt: skip
            return
        from lightning.pytorch.utilities.model_summary import get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        for name, _ in columns[1:]:
            table.add_column(name, justify="left" if name in ("Name", "Type", "Mode") else "right")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*map(str, row))
        console = get_console()
        console.print(table)
        grid = Table.grid(expand=True)
        grid.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            (
                "Non-trainable params",
                get_human_readable_count(int(total_parameters - trainable_parameters)),
            ),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", f"{model_size:,.3f}"),
            ("Modules in train mode", total_training_modes["train"]),
            ("Modules in eval mode", total_training_modes["eval"]),
        ):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console.print(grid)


# ------------------------------------------------------------------------------- the subcommands
class LifecycleTrainer(Trainer):
    """Lightning's :class:`~lightning.pytorch.Trainer` with the toolkit's commands that are not
    a training loop, :meth:`clean`, :meth:`augment` and :meth:`tune`; LightningCLI makes each of its
    methods named in :meth:`LifecycleCLI.subcommands` a subcommand of ``lifecycle``.

    Attributes:
        fold_trainer_kwargs: keyword arguments of each K-fold ``Trainer`` that :meth:`clean`
            trains; ``lifecycle clean`` sets them from the recipe's ``trainer`` section (see
            :func:`fold_trainer_kwargs`). ``None``: Lightning's defaults.
    """

    fold_trainer_kwargs: dict | None = None
    tune_commands: object = None  # lifecycle.pipeline.runner.StageCommands, for tune's trials

    def clean(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        cleaning: DataCleaner | None = None,
    ) -> CleaningResult:
        """Clean a dataset: validate it, drop duplicates and test-set copies, find label issues.

        Label issues come from confident learning on out-of-fold probabilities of K-fold
        training of ``model``. Writes ``manifest.csv`` (what training should read, as
        ``--data.init_args.cleaned_manifest``), ``removed.csv``, ``findings.csv``, the report
        and ``config.yaml`` into the run folder (``<default_root_dir>/<run_name>/version_N``);
        a failure leaves a ``FAILED`` file there.

        Args:
            model: the model each fold trains (the recipe's ``model``).
            datamodule: the data to clean (the recipe's ``data``), a
                :class:`~lifecycle.interfaces.CleanableData`.
            cleaning: what to look for and what to do with it (the recipe's ``cleaning:``
                section); default: :class:`~lifecycle.data.cleaning.DataCleaner`'s defaults.

        Returns:
            The :class:`~lifecycle.data.cleaning.CleaningResult`.
        """
        cleaner = cleaning if cleaning is not None else DataCleaner()
        with self._command_run(model, "clean") as out:
            result = cleaner.run(datamodule, model, dict(self.fold_trainer_kwargs or {}), out)
        print(f"wrote {out}")
        return result

    def tune(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        tuning: SweepStage | None = None,
    ) -> Path:
        """Sweep fields of this recipe with Optuna: ``lifecycle tune --config RECIPE --config
        TUNING.yaml``, the form a pipeline's ``tune`` stage runs (see
        :mod:`lifecycle.tuning.stage`). Each trial is a ``lifecycle fit`` of the recipe (the one
        given, with its inputs) under the run folder, which gets ``best.yaml``, ``trials.csv``,
        ``summary.json`` and the plots, as ``lifecycle tune sweep`` writes them.

        Args:
            model: the recipe's model, built once to check it; each trial builds its own.
            datamodule: the recipe's data, likewise.
            tuning: the search (the recipe's ``tuning:`` section; required, ``lifecycle tune``
                refuses a recipe without one before anything runs).

        Returns:
            The run folder.

        Raises:
            UserError: no trial completed (each one's error is in ``trials.csv``).
        """
        from lifecycle.tuning.sweep import sweep_command

        with self._command_run(model, "tune") as out:
            args = tuning.command_line(out / "config.yaml", out)
            if sweep_command(args, self.tune_commands) != 0:
                raise UserError(
                    f"no trial of the sweep completed; {out / 'trials.csv'} has each one's "
                    "error. Fix: the recipe, or the ranges in `tuning.init_args.params`."
                )
        return out

    @contextlib.contextmanager
    def _command_run(self, model: LightningModule, stage: str):
        """A command that is not a training loop, in its run folder (yielded) as ``fit`` has
        it: ``config.yaml``, the lineage record, and a ``FAILED`` file if it fails."""
        out = run_dir(self)
        out.mkdir(parents=True, exist_ok=True)
        for callback in self.callbacks:
            if isinstance(callback, SaveConfigCallback):  # config.yaml, as `fit` writes it
                callback.setup(self, model, stage=stage)
        # the run's lineage record (lineage.json), as a training run gets it
        lineage = [c for c in self.callbacks if isinstance(c, LineageCallback)]
        for callback in lineage:
            callback.setup(self, model, stage=stage)
        try:
            yield out
        except BaseException as exception:
            write_failed(out, exception)
            for callback in lineage:
                callback.on_exception(self, model, exception)
            raise
        for callback in lineage:
            callback.teardown(self, model, stage=stage)

    def augment(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        out: str = "augment_preview.png",
        samples: int = 8,
        views: int = 5,
        split: Literal["train", "val", "test"] = "train",
    ) -> Path:
        """Preview a recipe's augmentation: a grid of its images beside augmented versions.

        Any ``--data...`` override works as for ``fit``; the word ``preview`` after ``augment``
        may be given or left out.

        Args:
            model: the recipe's model (not used: the grid shows the data).
            datamodule: the recipe's data, an image DataModule.
            out: the PNG file to write.
            samples: images shown (rows).
            views: augmented versions of each image.
            split: the split whose images and pipeline are shown.

        Returns:
            The PNG file written.

        Raises:
            ConfigError: the recipe's data holds no images.
        """
        from lifecycle.data.augment import preview
        from lifecycle.data.images import ImageClassificationDataModule

        if not isinstance(datamodule, ImageClassificationDataModule):
            raise ConfigError(
                f"augment preview shows image pipelines; this config's data is "
                f"{type(datamodule).__name__}. Fix: give a recipe of image data, e.g. "
                "--config recipes/fashion_mnist/classify.yaml."
            )
        figure = preview(datamodule, samples, views, split)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        print(f"wrote {path}")
        return path


class LifecycleCLI(LightningCLI):
    """LightningCLI with the toolkit's subcommands and defaults (see the module docstring).

    Args:
        *args: LightningCLI's arguments.
        trainer_class: the Trainer; it must have a method for each of :meth:`subcommands`.
        parser_kwargs: LightningCLI's; ``prog`` defaults to ``lifecycle``.
        **kwargs: LightningCLI's arguments.
    """

    def __init__(self, *args, trainer_class=None, parser_kwargs=None, **kwargs):
        parser_kwargs = {"prog": "lifecycle", "description": DESCRIPTION, **(parser_kwargs or {})}
        super().__init__(
            *args,
            trainer_class=trainer_class or LifecycleTrainer,
            parser_kwargs=parser_kwargs,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's four subcommands, ``clean`` and ``augment`` (methods of
        :class:`LifecycleTrainer`), each with the method arguments the CLI fills itself."""
        built = {"model", "datamodule"}  # the recipe's, built by the CLI
        return {**LightningCLI.subcommands(), "clean": built, "augment": built, "tune": built}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run folder under trainer.default_root_dir (default: <recipe folder>-<recipe file>).",
        )
        parser.add_argument(
            "--run_version",
            type=int | None,
            default=None,
            help="The N of the run folder <default_root_dir>/<run_name>/version_N (default: the next free one; with --ckpt_path last, the newest with a checkpoint). `lifecycle run` gives each stage its own.",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint (or the last weights) and write the reports into the same run folder.",
        )
        parser.set_defaults({"trainer.default_root_dir": "runs"})

    def _section(self, config: Namespace) -> Namespace:
        """The subcommand's part of a parsed (or instantiated) config; all of it without one."""
        subcommand = config.get("subcommand")
        return config.get(subcommand, config) if subcommand else config

    def _run_name(self) -> str:
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, self.config) if subcommand else self.config
        if config.get("run_name"):
            return config["run_name"]
        paths = [str(p) for p in (config.get("config") or [])]
        return default_run_name(paths)

    def _resumed_version(self, root: str, name: str, subcommand: str | None) -> int | None:
        """The newest ``version_N`` of this run when ``fit --ckpt_path last`` resumes it (a
        folder without a checkpoint, e.g. of a run that FAILED before one, is never resumed)."""
        config = self.config.get(subcommand, {}) if subcommand else {}
        if subcommand != "fit" or config.get("ckpt_path") != "last":
            return None
        if config.get("run_version") is not None:
            folder = Path(root, name, f"version_{config['run_version']}")
            return config["run_version"] if any(folder.glob("checkpoints/*.ckpt")) else None
        versions = [
            int(p.name.split("_", 1)[1])
            for p in Path(root, name).glob("version_*")
            if p.name.split("_", 1)[1].isdigit() and any(p.glob("checkpoints/*.ckpt"))
        ]
        return max(versions) if versions else None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse ``args`` (``sys.argv[1:]`` when ``None``), then check ``--ckpt_path`` before
        LightningCLI reads the checkpoint's hyperparameters and anything is built (see
        :func:`check_checkpoint_file`); ``last`` must find a checkpoint to resume.

        Raises:
            ConfigError: ``clean`` or ``augment`` without a recipe.
        """
        words = sys.argv[1:] if args is None else args
        if isinstance(words, list | tuple) and words[:1] in (["clean"], ["augment"]):
            asks_help = any(w in ("-h", "--help") or w.startswith("--print_config") for w in words)
            if not asks_help and not _gives_recipe(list(words[1:])):
                raise ConfigError(
                    "give the recipe: --config recipes/<dataset>/<recipe>.yaml, e.g. "
                    f"lifecycle {words[0]} --config recipes/fashion_mnist/"
                    f"{'clean' if words[0] == 'clean' else 'classify'}.yaml"
                )
        # Not LightningCLI's own parse_arguments: it warns whenever `args` is given while
        # sys.argv holds arguments (against a script passing its own by mistake), and main()
        # always hands over the command line it was given, less --debug
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)
        self._check_ckpt_path()

    def _check_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, {}) if subcommand else {}
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            return
        ckpt_path = str(ckpt_path)
        if ckpt_path not in _CKPT_KEYWORDS:
            check_checkpoint_file(ckpt_path)
            return
        trainer = config.get("trainer") or {}
        if ckpt_path != "last" or trainer.get("logger") not in (None, True):
            return  # a logger of the user's own keeps its checkpoints where Lightning looks
        root, name = trainer.get("default_root_dir") or "runs", self._run_name()
        if subcommand != "fit":
            newest = sorted(Path(root, name).glob("version_*/checkpoints/last*.ckpt"))
            example = newest[-1] if newest else f"{root}/{name}/version_N/checkpoints/last.ckpt"
            raise MissingFileError(
                f"--ckpt_path last resumes `fit` runs; `{subcommand}` needs the checkpoint "
                f"file itself. Fix: --ckpt_path {example}."
            )
        if self._resumed_version(root, name, subcommand) is not None:
            return
        folder = Path(root, name)
        failed = sorted(p.parent.name for p in folder.glob(f"version_*/{FAILED_FILE}"))
        failed_note = (
            f" ({', '.join(failed)} failed before a first checkpoint: see the FAILED file there)"
            if failed
            else ""
        )
        raise MissingFileError(
            f"--ckpt_path last: there is no earlier run to resume: {folder.resolve()} holds no "
            f"version_N with a checkpoint{failed_note}. Fix: drop --ckpt_path to start a new "
            "run, give --run_name of the run to resume (its folder under "
            f"trainer.default_root_dir={root}), or give a checkpoint file as --ckpt_path."
        )

    def default_checkpoint(self) -> ModelCheckpoint:
        """The checkpoint callback a run gets unless its config holds one: the best by the
        metric the module declares as its ``monitor`` (lowest, or highest when its
        ``monitor_mode`` is ``"max"``) and ``last``; for a module that declares none, ``last``
        alone (the run's newest weights), as nothing says what "best" is."""
        monitor = getattr(self.model, "monitor", None)
        if not monitor:
            return ModelCheckpoint(save_top_k=0, save_last=True)
        return ModelCheckpoint(
            monitor=monitor,
            mode=getattr(self.model, "monitor_mode", "min"),
            save_last=True,
            filename="best-{epoch:02d}-{step}",
        )

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._section(self.config_init).get("trainer") or {}
        callbacks = trainer_config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        has = lambda kind: any(isinstance(c, kind) for c in callbacks)  # noqa: E731
        if trainer_config.get("enable_progress_bar", True) is not False and not has(ProgressBar):
            callbacks.append(RichProgressBar(leave=True))
        checkpointing = trainer_config.get("enable_checkpointing", True) is not False
        if checkpointing and not any(
            isinstance(c, ModelCheckpoint) and not isinstance(c, ResumableCheckpoint)
            for c in callbacks
        ):
            callbacks.append(self.default_checkpoint())
        if checkpointing and not has(ResumableCheckpoint):
            callbacks.append(ResumableCheckpoint())
        if not has(EvaluationReport):
            callbacks.append(EvaluationReport())
        if not has(PredictionWriter):
            callbacks.append(PredictionWriter())
        if not has(FailedRunMarker):
            callbacks.append(FailedRunMarker())
        if not has(LineageCallback):
            callbacks.append(LineageCallback())
        callbacks.extend(trial_callbacks())  # a sweep's trial: its pruning
        if trainer_config.get("enable_model_summary", True) is not False and not has(ModelSummary):
            callbacks.append(MeasuredModelSummary())
            # ours replaces Lightning's default (which would log that it skips adding one)
            kwargs.setdefault("enable_model_summary", False)
        kwargs.setdefault("callbacks", callbacks)
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            root, name = trainer_config.get("default_root_dir") or "runs", self._run_name()
            resumed = self._resumed_version(root, name, self.subcommand)
            # a resumed run appends to its own log (Lightning's CSVLogger would delete it)
            logger_class = CSVLogger if resumed is None else ResumedCSVLogger
            version = (
                resumed if resumed is not None else self._section(self.config).get("run_version")
            )
            csv_logger = logger_class(save_dir=root, name=name, version=version)
            loggers = [csv_logger, *stage_loggers()]
            if _tensorboard_available():
                loggers.append(
                    TensorBoardLogger(
                        save_dir=root, name=name, version=csv_logger.version, sub_dir="tensorboard"
                    )
                )
            kwargs["logger"] = loggers
        return super().instantiate_trainer(**kwargs)

    def before_tune(self) -> None:
        """Give ``tune`` the command its trials run (``lifecycle fit``, in this process).

        Raises:
            ConfigError: the recipe has no ``tuning:`` section.
        """
        if self._section(self.config_init).get("tuning") is None:
            raise ConfigError(
                "lifecycle tune --config RECIPE needs a `tuning:` section in a config, e.g. "
                "lifecycle tune --config recipes/digits/classify.yaml --config "
                "recipes/digits/tune.yaml; or an action: lifecycle tune lr|batch-size|sweep "
                "--config RECIPE."
            )

        self.trainer.tune_commands = stage_commands()

    def before_clean(self) -> None:
        """Give ``clean``'s K-fold Trainers the recipe's ``trainer`` section."""
        self.trainer.fold_trainer_kwargs = fold_trainer_kwargs(self)

    def after_fit(self) -> None:
        config = self.config[self.subcommand]
        if not config.get("test_after_fit") or self.trainer.interrupted:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def _gives_recipe(args: list[str]) -> bool:
    return any(a == "--config" or a.startswith(("--config=", "--data")) for a in args)


def recipe_cli(cli_class: type[LifecycleCLI], args: list[str]) -> LifecycleCLI:
    """A recipe's model, DataModule and Trainer, instantiated but not run (LightningCLI's
    ``run=False``: no subcommand in ``args``), e.g. ``recipe_cli(LifecycleCLI, ["--config",
    "recipes/digits/classify.yaml"])``; a clean recipe needs :class:`CleanCLI`."""
    return cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        run=False,
        args=args,
        auto_configure_optimizers=False,
    )


class CleanCLI(LifecycleCLI):
    """A clean recipe instantiated without running it (:func:`recipe_cli`): ``data``, ``model``
    and ``trainer`` as for ``lifecycle clean``, and its ``cleaning`` section built as a
    :class:`~lifecycle.data.cleaning.DataCleaner` in ``config_init["cleaning"]``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(DataCleaner, "cleaning")


# Trainer arguments each K-fold run takes from the recipe; loggers, checkpoints and callbacks
# belong to a fit run's folder, which folds do not write.
_FOLD_TRAINER_SKIP = {"callbacks", "logger", "default_root_dir", "enable_checkpointing", "plugins"}


def fold_trainer_kwargs(cli: LifecycleCLI) -> dict:
    """The recipe's ``trainer`` section (of ``lifecycle clean``, or of a :class:`CleanCLI`) as
    keyword arguments of each K-fold ``Trainer``
    (without loggers, checkpoints, callbacks or plugins). ``class_path`` values (the strategy
    of a preset such as ``recipes/strategies/ddp.yaml``, an accelerator, a profiler) are built
    afresh from the config, not taken from the CLI's own Trainer, which already bound them.

    Raises:
        ConfigError: a value the folds cannot use, named by its field: a strategy that starts
            its processes by spawn or fork (the held-out predictions would stay in those
            processes), or a ``class_path`` that does not build.
    """
    import importlib

    def build(value, field: str):
        if isinstance(value, list | tuple):
            return type(value)(build(v, f"{field}[{i}]") for i, v in enumerate(value))
        if not hasattr(value, "class_path"):
            return value
        init_args = getattr(value, "init_args", None)
        kwargs = {k: build(v, f"{field}.init_args.{k}") for k, v in vars(init_args or {}).items()}
        if kwargs.get("start_method") in ("spawn", "fork", "forkserver"):
            raise ConfigError(
                f"`{field}.init_args.start_method: {kwargs['start_method']}` cannot train the "
                "cleaning folds: the held-out predictions of each fold would stay in the "
                "started processes. Fix: remove `start_method` (processes started as scripts, "
                "as in recipes/strategies/ddp.yaml)."
            )
        module, _, name = str(value.class_path).rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)(**kwargs)
        except Exception as error:  # noqa: BLE001 - any failure is the config's, named below
            raise ConfigError(
                f"`{field}: {value.class_path}` could not be built for the cleaning folds: "
                f"{type(error).__name__}: {error}. Fix: correct its `init_args`, or remove it."
            ) from error

    kwargs = {}
    for key, value in vars(cli._section(cli.config)["trainer"]).items():
        if key in _FOLD_TRAINER_SKIP or value is None:
            continue
        if (
            key == "strategy"
            and isinstance(value, str)
            and any(word in value for word in ("spawn", "fork", "notebook"))
        ):
            raise ConfigError(
                f"`trainer.strategy: {value}` cannot train the cleaning folds: it starts its "
                "processes by spawn or fork, where each fold's held-out predictions would "
                "stay. Fix: use `--config recipes/strategies/ddp.yaml` (processes started as "
                "scripts) or `trainer.strategy: ddp`."
            )
        kwargs[key] = build(value, f"trainer.{key}")
    return kwargs


def augment_command(args: list[str]) -> Path:
    """``lifecycle augment preview ARGS`` run in this process (e.g. from a notebook): ``args``
    as after ``augment``. Returns the PNG file written (see :meth:`LifecycleTrainer.augment`).
    A user error propagates (no exit)."""
    with quiet_startup():
        cli = _cli(["augment", *_without_preview(list(args))])
    return Path(cli.config["augment"]["out"])


DESCRIPTION = (
    "A deep learning model's whole life on PyTorch Lightning. Each subcommand takes a recipe "
    "(--config recipes/<dataset>/<recipe>.yaml) and overrides of any of its fields; "
    "`lifecycle <subcommand> --help` lists them."
)


def _without_preview(args: list[str]) -> list[str]:
    """``augment``'s arguments without its optional action word ``preview`` (its only one)."""
    return args[1:] if args[:1] == ["preview"] else args


def _cli(args: list[str]) -> LifecycleCLI:
    return LifecycleCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
        # optimizers and schedulers are arguments of each stage module (see lifecycle.training.optim)
        auto_configure_optimizers=False,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lifecycle`` console script (``args`` default to ``sys.argv[1:]``):
    ``fit``, ``validate``, ``test``, ``predict``, ``clean`` and ``augment [preview]``, in one
    LightningCLI (:class:`LifecycleCLI`), with a quiet start-up (:func:`quiet_startup`).

    A :class:`~lifecycle.errors.UserError` ends it with ``lifecycle <subcommand>: error:
    <message>`` on stderr and ``SystemExit(2)``; ``--debug`` (anywhere in ``args``) or
    ``LIFECYCLE_DEBUG=1`` raises it with its traceback instead. Other errors propagate."""
    args = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in args or os.environ.get("LIFECYCLE_DEBUG", "").lower() in ("1", "true")
    args = [a for a in args if a != "--debug"]
    if args[:1] in (["run"], ["lineage"]):
        return _pipeline_command(args[0], args[1:], debug)
    if args[:1] == ["tune"] and not (args[1:2] and args[1].startswith("--")):
        action = args[1] if len(args) > 1 and not args[1].startswith("-") else ""
        return _reporting_user_errors(f"lifecycle tune {action}".strip(), debug,
                                      lambda: _tune_command(args[1:]))  # fmt: skip
    if args[:1] == ["augment"]:
        args = ["augment", *_without_preview(args[1:])]
    subcommand = args[0] if args[:1] and args[0] in LifecycleCLI.subcommands() else None
    _reporting_user_errors(f"lifecycle {subcommand}" if subcommand else "lifecycle", debug,
                           lambda: _cli(args))  # fmt: skip


def _reporting_user_errors(prog: str, debug: bool, command) -> None:
    """Run ``command()`` with a quiet start-up; a user's mistake ends it with ``<prog>: error:
    <message>`` and exit status 2 (its traceback with ``debug``); a non-zero status it returns
    is the exit status."""
    try:
        with quiet_startup():
            status = command()
    except Exception as exception:
        message = user_error_message(exception)
        if message is None or debug:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if isinstance(status, int) and status:
        raise SystemExit(status)


def _pipeline_command(name: str, args: list[str], debug: bool) -> None:
    """``lifecycle run`` (:func:`lifecycle.pipeline.runner.run_command`) and ``lifecycle lineage``
    (:func:`lifecycle.pipeline.lineage.lineage_command`), with the other subcommands' handling of
    a user's mistake."""

    def command() -> int:
        if name == "run":
            from lifecycle.pipeline.runner import run_command

            return run_command(args, stage_commands())
        from lifecycle.pipeline.lineage import lineage_command

        return lineage_command(args)

    _reporting_user_errors(f"lifecycle {name}", debug, command)


def stage_commands():
    """The :class:`~lifecycle.pipeline.runner.StageCommands` a pipeline's stages and a sweep's
    trials run: every subcommand of this CLI, in this process."""
    from lifecycle.pipeline.runner import StageCommands

    return StageCommands(set(LifecycleCLI.subcommands()), _cli, describe_error)


def _tune_command(args: list[str]) -> int:
    """``lifecycle tune lr|batch-size|sweep`` (:func:`lifecycle.tuning.command.tune_command`),
    given the commands it runs: ``fit`` for each trial, the recipe built but not run for the
    finders."""
    from lifecycle.tuning.command import tune_command
    from lifecycle.tuning.finders import TuneCommands

    finders = TuneCommands(lambda a: recipe_cli(LifecycleCLI, a), fold_trainer_kwargs)
    return tune_command(args, stage_commands(), finders)


if __name__ == "__main__":  # pragma: no cover
    main()
