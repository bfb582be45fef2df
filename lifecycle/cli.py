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
- a rich progress bar, and ``seed_everything`` defaulting to 42.

Each default callback is added only when the config does not already hold one of its kind,
so ``trainer.callbacks`` in a recipe can replace any of them.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

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
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if config.get("run_name"):
            return config["run_name"]
        paths = [str(p) for p in (config.get("config") or [])]
        return default_run_name(paths)

    def _resumed_version(self, root: str, name: str) -> int | None:
        """The newest ``version_N`` of this run when ``fit --ckpt_path last`` resumes it."""
        config = self.config.get(self.subcommand, {}) if self.subcommand else {}
        if self.subcommand != "fit" or config.get("ckpt_path") != "last":
            return None
        versions = [
            int(p.name.split("_", 1)[1])
            for p in Path(root, name).glob("version_*")
            if p.name.split("_", 1)[1].isdigit() and any(p.glob("checkpoints/*.ckpt"))
        ]
        return max(versions) if versions else None

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
        kwargs.setdefault("callbacks", callbacks)
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            root, name = trainer_config.get("default_root_dir") or "runs", self._run_name()
            resumed = self._resumed_version(root, name)
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
    (without loggers, checkpoints, callbacks or plugins)."""
    return {
        key: value
        for key, value in vars(cli.config["trainer"]).items()
        if key not in _FOLD_TRAINER_SKIP and value is not None and not hasattr(value, "class_path")
    }


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
    result = cleaner.run(cli.datamodule, cli.model, fold_kwargs, out)
    print(f"wrote {out}")
    return result


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lifecycle`` console script (``args`` default to ``sys.argv[1:]``):
    LightningCLI's ``fit``/``validate``/``test``/``predict``, ``clean`` and ``augment preview``."""
    import sys

    args = sys.argv[1:] if args is None else list(args)
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
