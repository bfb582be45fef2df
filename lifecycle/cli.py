"""The ``lifecycle`` command: LightningCLI with working defaults.

``lifecycle fit|validate|test|predict --config recipes/<dataset>/<stage>.yaml`` — models and
DataModules are chosen by ``class_path`` (ours or the user's own), optimizers and schedulers
likewise. On top of LightningCLI this adds:

- a run folder ``<default_root_dir>/<run_name>/version_N`` holding the resolved ``config.yaml``,
  ``metrics.csv`` (CSVLogger; TensorBoard events too when ``tensorboard`` is installed),
  ``checkpoints/`` (best by ``val/loss``, ``last`` at each epoch's end and ``last-step``
  mid-epoch, see :mod:`lifecycle.training.fault_tolerance`), and after ``test``/``predict``
  the reports of :mod:`lifecycle.evaluation`;
- ``fit --ckpt_path last`` resumes the newest ``version_N`` of the run in its own folder (its
  logs go on there), from its newest checkpoint;
- ``--test_after_fit true``: ``fit`` ends by testing the best checkpoint into the same folder;
- a rich progress bar, and ``seed_everything`` defaulting to 42;
- a mistake of the user's (a :class:`~lifecycle.errors.UserError`, also when jsonargparse,
  Lightning or a DataLoader worker raised it wrapped in another error) ends the command with
  ``lifecycle <subcommand>: error: <message>`` on stderr and exit status 2, without a traceback
  (``--debug`` or ``LIFECYCLE_DEBUG=1`` shows it); any other error keeps its traceback;
- a run that fails leaves a ``FAILED`` file (the error's type and message) in its run folder,
  and ``--ckpt_path last`` never resumes a run that has no checkpoint: with none to resume it is
  an error naming the folder it looked in, not a fresh run.

Each default callback is added only when the config does not already hold one of its kind,
so ``trainer.callbacks`` in a recipe can replace any of them.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lifecycle.errors import MissingFileError, UserError
from lifecycle.evaluation.report import EvaluationReport, PredictionWriter
from lifecycle.training.fault_tolerance import ResumableCheckpoint, ResumedCSVLogger


def _tensorboard_available() -> bool:
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE, _TENSORBOARDX_AVAILABLE

    return bool(_TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE)


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


SUBCOMMANDS = ("fit", "validate", "test", "predict", "clean", "augment")
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


class LifecycleCLI(LightningCLI):
    """LightningCLI with the toolkit's defaults (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run folder under trainer.default_root_dir (default: <recipe folder>-<recipe file>).",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint (or the last weights) and write the reports into the same run folder.",
        )
        parser.set_defaults({"trainer.default_root_dir": "runs"})

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
        versions = [
            int(p.name.split("_", 1)[1])
            for p in Path(root, name).glob("version_*")
            if p.name.split("_", 1)[1].isdigit() and any(p.glob("checkpoints/*.ckpt"))
        ]
        return max(versions) if versions else None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check ``--ckpt_path`` before LightningCLI reads the checkpoint's
        hyperparameters and anything is built (see :func:`check_checkpoint_file`); ``last``
        must find a checkpoint to resume."""
        super().parse_arguments(parser, args)
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

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={})
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
            callbacks.append(
                ModelCheckpoint(
                    monitor="val/loss",
                    mode="min",
                    save_last=True,
                    filename="best-{epoch:02d}-{step}",
                )
            )
        if checkpointing and not has(ResumableCheckpoint):
            callbacks.append(ResumableCheckpoint())
        if not has(EvaluationReport):
            callbacks.append(EvaluationReport())
        if not has(PredictionWriter):
            callbacks.append(PredictionWriter())
        if not has(FailedRunMarker):
            callbacks.append(FailedRunMarker())
        kwargs.setdefault("callbacks", callbacks)
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            root, name = trainer_config.get("default_root_dir") or "runs", self._run_name()
            resumed = self._resumed_version(root, name, self.subcommand)
            # a resumed run appends to its own log (Lightning's CSVLogger would delete it)
            logger_class = CSVLogger if resumed is None else ResumedCSVLogger
            csv_logger = logger_class(save_dir=root, name=name, version=resumed)
            loggers = [csv_logger]
            if _tensorboard_available():
                loggers.append(
                    TensorBoardLogger(
                        save_dir=root, name=name, version=csv_logger.version, sub_dir="tensorboard"
                    )
                )
            kwargs["logger"] = loggers
        return super().instantiate_trainer(**kwargs)

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
    """A recipe's model, DataModule and Trainer, instantiated but not run (for the commands
    that are not LightningCLI subcommands)."""
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


def augment_command(args: list[str]) -> Path:
    """``lifecycle augment preview --config RECIPE [--out grid.png] [--samples 8] [--views 5]``:
    a grid of training images beside their augmented versions, from a recipe's data config
    (any ``--data...`` override works as for ``fit``)."""
    import argparse

    from lifecycle.data.augment import preview
    from lifecycle.data.images import ImageClassificationDataModule

    parser = argparse.ArgumentParser(
        prog="lifecycle augment",
        description="Look at a recipe's augmentation before training with it.",
    )
    parser.add_argument("action", choices=["preview"])
    parser.add_argument("--out", default="augment_preview.png", help="PNG file to write")
    parser.add_argument("--samples", type=int, default=8, help="images (rows)")
    parser.add_argument("--views", type=int, default=5, help="augmented versions of each")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    known, rest = parser.parse_known_args(args)
    if not _gives_recipe(rest):
        parser.error("give the recipe: --config recipes/<dataset>/<recipe>.yaml")
    cli = recipe_cli(LifecycleCLI, rest)
    if not isinstance(cli.datamodule, ImageClassificationDataModule):
        parser.error(
            f"augment preview shows image pipelines; this config's data is "
            f"{type(cli.datamodule).__name__}."
        )
    figure = preview(cli.datamodule, known.samples, known.views, known.split)
    out = Path(known.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")
    return out


class CleanCLI(LifecycleCLI):
    """The recipe of ``lifecycle clean``: ``data`` and ``model`` as for ``fit``, ``trainer`` as
    each fold's training budget, and a ``cleaning`` section (:class:`DataCleaner`'s arguments)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from lifecycle.data.cleaning import DataCleaner

        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(DataCleaner, "cleaning")


# Trainer arguments each K-fold run takes from the recipe; loggers, checkpoints and callbacks
# belong to a fit run's folder, which folds do not write.
_FOLD_TRAINER_SKIP = {"callbacks", "logger", "default_root_dir", "enable_checkpointing", "plugins"}


def fold_trainer_kwargs(cli: LifecycleCLI) -> dict:
    """The recipe's ``trainer`` section as keyword arguments of each K-fold ``Trainer``
    (without loggers, checkpoints, callbacks or plugins). ``class_path`` values (the strategy
    of a preset such as ``recipes/strategies/ddp.yaml``, an accelerator, a profiler) are built
    afresh from the config, not taken from the CLI's own Trainer, which already bound them.

    Raises:
        ConfigError: a value the folds cannot use, named by its field: a strategy that starts
            its processes by spawn or fork (the held-out predictions would stay in those
            processes), or a ``class_path`` that does not build.
    """
    import importlib

    from lifecycle.errors import ConfigError

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
    for key, value in vars(cli.config["trainer"]).items():
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


def clean_command(args: list[str]):
    """``lifecycle clean --config recipes/<dataset>/clean.yaml``: validate, de-duplicate and find
    label issues; writes ``manifest.csv``, ``removed.csv``, ``findings.csv`` and the report
    into ``<default_root_dir>/<run_name>/version_N``. Returns the
    :class:`~lifecycle.data.cleaning.CleaningResult`."""
    from lifecycle.data.cleaning import DataCleaner

    if not _gives_recipe(args):
        raise SystemExit(
            "lifecycle clean: give the recipe, e.g. --config recipes/fashion_mnist/clean.yaml"
        )
    cli = recipe_cli(CleanCLI, args)
    cleaner = cli.config_init["cleaning"]
    if not isinstance(cleaner, DataCleaner):
        cleaner = DataCleaner(**vars(cli.config["cleaning"]))
    fold_kwargs = fold_trainer_kwargs(cli)
    root = cli.config["trainer"].get("default_root_dir") or "runs"
    out = Path(CSVLogger(save_dir=root, name=cli._run_name()).log_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
    try:
        result = cleaner.run(cli.datamodule, cli.model, fold_kwargs, out)
    except BaseException as exception:
        write_failed(out, exception)
        raise
    print(f"wrote {out}")
    return result


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lifecycle`` console script (``args`` default to ``sys.argv[1:]``):
    LightningCLI's ``fit``/``validate``/``test``/``predict``, ``clean`` and ``augment preview``.

    A :class:`~lifecycle.errors.UserError` ends it with ``lifecycle <subcommand>: error:
    <message>`` on stderr and ``SystemExit(2)``; ``--debug`` (anywhere in ``args``) or
    ``LIFECYCLE_DEBUG=1`` raises it with its traceback instead. Other errors propagate."""
    args = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in args or os.environ.get("LIFECYCLE_DEBUG", "").lower() in ("1", "true")
    args = [a for a in args if a != "--debug"]
    prog = f"lifecycle {args[0]}" if args[:1] and args[0] in SUBCOMMANDS else "lifecycle"
    try:
        with warnings.catch_warnings():
            # main() hands LightningCLI its own argv (less --debug), which is no mistake
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            _run_command(args)
    except Exception as exception:
        message = user_error_message(exception)
        if message is None or debug:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_command(args: list[str]) -> None:
    if args[:1] == ["augment"]:
        augment_command(args[1:])
        return
    if args[:1] == ["clean"]:
        clean_command(args[1:])
        return
    LifecycleCLI(
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


if __name__ == "__main__":  # pragma: no cover
    main()
