"""The one `lifecycle` command as a user meets it: real processes, its help, a quiet start-up
of every subcommand, and the defaults that fit any module."""

import json
import logging
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from tests.conftest import REPO, Run, run_lifecycle

SUBCOMMANDS = ("fit", "validate", "test", "predict", "clean", "augment")
DIGITS = str(REPO / "recipes/digits/classify.yaml")
SMALL = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]  # fmt: skip
# what the start-up printed before, none of which a user can act on
NOISE = ("LightningCLI's args parameter", "LeafSpec", "FLOPs", "litlogger", "litmodels", "💡")


def lifecycle(*args, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    """``python -m lifecycle ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=600, env=env or dict(os.environ),
    )  # fmt: skip


class _Records(logging.Handler):
    """Every record that reaches one of the loggers it is added to, once."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: dict[int, logging.LogRecord] = {}  # by id: each record is held, so unique

    def emit(self, record):
        self.records[id(record)] = record


@pytest.fixture
def quiet_run():
    """``quiet_run(*args)``: ``lifecycle ARGS`` in this process (:func:`run_lifecycle`), as a
    :class:`~tests.conftest.Run` whose ``stderr`` also shows everything a fresh process would
    print besides: each warning raised (every time, by an ``always`` filter put in first: the
    command's own filters go in front of it, so they still apply) and each record logged at info
    or above to the root or Lightning's loggers (whose levels are set to info, as in a real
    process, while it runs)."""
    names = ("lightning.pytorch", "lightning.fabric")

    def run(*args) -> Run:
        records = _Records()
        loggers = [logging.getLogger()] + [logging.getLogger(name) for name in names]
        levels = [lg.level for lg in loggers[1:]]
        for lg in loggers:
            lg.addHandler(records)
        for lg in loggers[1:]:
            lg.setLevel(logging.INFO)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                proc = run_lifecycle(list(args))
        finally:
            for lg in loggers:
                lg.removeHandler(records)
            for lg, level in zip(loggers[1:], levels, strict=True):
                lg.setLevel(level)
        shown = [
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught
        ]
        logged = [records.format(r) + "\n" for r in records.records.values()]
        return Run(proc.returncode, proc.stdout, proc.stderr + "".join(shown + logged))

    return run


def test_help_lists_every_subcommand_with_its_line():
    proc = run_lifecycle(["--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: lifecycle ")
    listed = {}
    for line in proc.stdout.splitlines():
        words = line.split(maxsplit=1)
        if line.startswith("    ") and len(words) == 2 and words[0] in SUBCOMMANDS:
            listed[words[0]] = words[1]
    assert set(listed) == set(SUBCOMMANDS), proc.stdout
    assert listed["clean"].startswith("Clean a dataset: validate it, drop duplicates")
    assert listed["augment"].startswith("Preview a recipe's augmentation")


@pytest.mark.slow
def test_the_command_runs_as_a_real_process_and_every_subcommand_starts_quietly(
    tmp_path, quiet_run
):
    # real processes: the command from a fresh interpreter, whose start-up prints no noise
    root = ["--trainer.default_root_dir", tmp_path]
    fit = lifecycle("fit", "--config", DIGITS, *SMALL, *root, "--test_after_fit", "false",
                    "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    output = fit.stdout + fit.stderr
    assert [n for n in NOISE if n in output] == [], output
    assert "Total params" in output and "SmallCNN" in output  # the model summary stays
    ckpt = tmp_path / "digits-classify/version_0/checkpoints/last.ckpt"
    assert ckpt.is_file()

    # the other subcommands in this process, with every warning and log record shown
    def quiet(proc: Run, subcommand: str) -> Run:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [n for n in NOISE if n in proc.stdout + proc.stderr] == [], (
            subcommand,
            proc.stderr[-5000:],
        )
        return proc

    for subcommand in ("validate", "test", "predict"):
        quiet(quiet_run(subcommand, "--config", DIGITS, "--ckpt_path", ckpt, *SMALL, *root,
                        "--trainer.enable_progress_bar", "false"), subcommand)  # fmt: skip
    assert "accuracy" in json.loads((tmp_path / "digits-classify/version_2/metrics.json").read_text())["metrics"]  # fmt: skip
    rows = (tmp_path / "digits-classify/version_3/predictions.csv").read_text().splitlines()
    assert rows[0].startswith("index,source,prediction,label,prob_0")
    assert len(rows) == 1 + round(1797 * 0.2)  # the test split

    grid = tmp_path / "grid.png"
    augment = quiet(quiet_run("augment", "preview", "--config", DIGITS, "--samples", "2",
                              "--views", "1", "--out", grid, *root), "augment")  # fmt: skip
    assert f"wrote {grid}" in augment.stdout
    assert grid.read_bytes()[:4] == b"\x89PNG"

    # clean dispatches through its own CLI class and fold trainers (which deep-copy an object
    # holding a LeafSpec: torch's FutureWarning again, from copyreg, which the filter matches)
    clean = quiet(quiet_run("clean", "--config", REPO / "recipes/fashion_mnist/clean.yaml",
                            "--data.init_args.dataset", "digits",
                            "--model.init_args.backbone", "lifecycle.models.MLP",
                            "--model.init_args.backbone.init_args.in_features", "64",
                            "--cleaning.subset", "200", "--cleaning.folds", "2",
                            "--trainer.max_epochs", "1", "--trainer.precision", "32-true",
                            "--trainer.enable_progress_bar", "false", *root), "clean")  # fmt: skip
    out = tmp_path / "fashion_mnist-clean/version_0"
    assert f"wrote {out}" in clean.stdout
    assert json.loads((out / "report.json").read_text())["records"] == 200
    assert "cleaning:" in (out / "config.yaml").read_text()


def test_import_lifecycle_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "NO_ALBUMENTATIONS_UPDATE")}  # fmt: skip
    # one process: `import lifecycle` first (it imports no huggingface_hub, which reads
    # HF_HUB_OFFLINE once, on import), then the command's entry point, which sets them before
    # Lightning imports huggingface_hub
    code = (
        "import os, sys; import lifecycle; print('HF_HUB_OFFLINE' in os.environ,"
        " 'NO_ALBUMENTATIONS_UPDATE' in os.environ, 'huggingface_hub' in sys.modules);"
        " import lifecycle.cli, huggingface_hub.constants as c;"
        " print(os.environ['HF_HUB_OFFLINE'], os.environ['NO_ALBUMENTATIONS_UPDATE'],"
        " c.HF_HUB_OFFLINE)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)  # fmt: skip
    assert proc.stdout.split() == ["False", "False", "False", "1", "1", "True"], proc.stderr[-2000:]


def test_a_recipe_built_from_python_with_a_command_line_does_not_warn(monkeypatch, tmp_path):
    from lifecycle.cli import LifecycleCLI, recipe_cli

    monkeypatch.setattr(sys, "argv", ["my_script.py", "--some-flag"])  # e.g. a notebook kernel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = recipe_cli(LifecycleCLI, ["--config", DIGITS, "--trainer.default_root_dir",
                                        str(tmp_path)])  # fmt: skip
    assert type(cli.model).__name__ == "ClassificationModule"
    assert [str(w.message) for w in caught if "args parameter" in str(w.message)] == []


# ------------------------------------------------------------------- defaults that fit any module
class TrainLossOnly(L.LightningModule):
    """A user's module that declares no metric to monitor and logs nothing but ``train_loss``
    (its validation computes a loss it does not log)."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Linear(64, 10)

    def _loss(self, batch):
        return torch.nn.functional.cross_entropy(
            self.net(batch["image"].flatten(1)), batch["label"]
        )

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._loss(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_a_module_that_declares_no_monitor_is_checkpointed_without_one(tmp_path):
    from lifecycle.cli import main

    main(["fit", "--config", DIGITS, "--model", "tests.test_cli_commands.TrainLossOnly",
          "--trainer.log_every_n_steps", "1",
          *SMALL, "--test_after_fit", "false", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])  # fmt: skip
    checkpoints = tmp_path / "digits-classify/version_0/checkpoints"
    names = {p.name for p in checkpoints.glob("*.ckpt")}
    assert names - {"last-step.ckpt"} == {"last.ckpt"}  # no "best" by a metric never logged
    assert "train_loss" in (tmp_path / "digits-classify/version_0/metrics.csv").read_text()


def test_the_default_checkpoint_monitors_what_the_module_declares():
    from lifecycle.cli import LifecycleCLI

    def checkpoint(model):
        return LifecycleCLI.default_checkpoint(SimpleNamespace(model=model))

    declared = checkpoint(SimpleNamespace(monitor="val/loss"))
    assert (declared.monitor, declared.mode, declared.save_last) == ("val/loss", "min", True)
    assert declared.filename == "best-{epoch:02d}-{step}"
    accuracy = checkpoint(SimpleNamespace(monitor="val/accuracy", monitor_mode="max"))
    assert (accuracy.monitor, accuracy.mode) == ("val/accuracy", "max")
    plain = checkpoint(TrainLossOnly())
    assert (plain.monitor, plain.save_top_k, plain.save_last) == (None, 0, True)


def test_a_stage_monitoring_a_higher_is_better_metric_is_checkpointed_at_its_maximum():
    from lifecycle.cli import LifecycleCLI
    from lifecycle.models import MLP
    from lifecycle.stages import ClassificationModule, RegressionModule

    def mode(model):
        return LifecycleCLI.default_checkpoint(SimpleNamespace(model=model)).mode

    assert mode(ClassificationModule(MLP(4, [8]), 3)) == "min"  # val/loss
    assert mode(ClassificationModule(MLP(4, [8]), 3, monitor="val/accuracy")) == "max"
    assert mode(ClassificationModule(MLP(4, [8]), 3, monitor="val/f1")) == "max"
    assert mode(RegressionModule(MLP(4, [8]), monitor="val/r2")) == "max"
    assert mode(RegressionModule(MLP(4, [8]), monitor="val/mae")) == "min"
