"""What the pipeline tests share: a tiny pipeline (clean, train, distill on scikit-learn's 8x8
digits, about 20 s in one process) written as a pipeline recipe, the readers of its stage
folders, and :class:`KillOnce`, a callback that SIGKILLs its process the first time a run
reaches a step (as a lost node or the out-of-memory killer would), so that a pipeline started
again resumes the stage it was in."""

from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from tests.conftest import REPO, Run, run_lifecycle

# one-epoch, 200-image cleaning with an MLP on the flattened 8x8 images (2 folds)
CLEAN = {
    "command": "clean",
    "config": "recipes/fashion_mnist/clean.yaml",
    "overrides": {
        "data.init_args.dataset": "digits",
        "model.init_args.backbone": "lifecycle.models.MLP",
        "model.init_args.backbone.init_args.in_features": 64,
        "cleaning.subset": 200,
        "cleaning.folds": 2,
        "trainer.max_epochs": 1,
        "trainer.precision": "32-true",
        "trainer.enable_progress_bar": False,
    },
}
# the digits CNN on what clean kept: 2 epochs of 3 batches
TRAIN = {
    "command": "fit",
    "config": "recipes/digits/classify.yaml",
    "inputs": {"data.init_args.cleaned_manifest": "clean.manifest"},
    "overrides": {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 3,
        "trainer.limit_val_batches": 1,
        "trainer.limit_test_batches": 1,
        "trainer.enable_progress_bar": False,
    },
}
# a smaller CNN distilled from train's best checkpoint
DISTILL = {
    "command": "fit",
    "config": "recipes/fashion_mnist/distill.yaml",
    "inputs": {"model.init_args.teacher": "train.best_checkpoint"},
    "overrides": {
        "data.init_args.dataset": "digits",
        "model.init_args.student.init_args.channels": [8, 16],
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 3,
        "trainer.limit_val_batches": 1,
        "trainer.limit_test_batches": 1,
        "trainer.precision": "32-true",
        "trainer.enable_progress_bar": False,
    },
}


def tiny_stages() -> dict[str, dict]:
    """The tiny pipeline's stages (a fresh copy to change): ``clean``, ``train``, ``distill``."""
    return {"clean": copy.deepcopy(CLEAN), "train": copy.deepcopy(TRAIN),
            "distill": copy.deepcopy(DISTILL)}  # fmt: skip


def write_pipeline(path: Path, root: Path, stages: dict[str, dict], **extra: Any) -> Path:
    """Write a pipeline recipe with ``root``, ``stages`` (in their order) and ``extra`` keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    recipe = {"root": str(root), **extra, "stages": stages}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_pipeline(recipe: Path, *options: str) -> Run:
    """``lifecycle run --config RECIPE OPTIONS`` in this process, from the repository root."""
    return run_lifecycle(["run", "--config", str(recipe), *options], cwd=REPO)


def versions(root: Path) -> dict[str, list[str]]:
    """``{stage: [version_0, ...]}`` of the stage folders under a pipeline folder."""
    return {
        stage.name: sorted(p.name for p in stage.glob("version_*"))
        for stage in sorted(Path(root).iterdir())
        if stage.is_dir() and any(stage.glob("version_*"))
    }


def record(root: Path, stage: str, version: int) -> dict:
    """The ``lineage.json`` of ``<root>/<stage>/version_<version>``."""
    return json.loads((Path(root) / stage / f"version_{version}" / "lineage.json").read_text())


def plan_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of the plan table ``lifecycle run`` prints, ``{stage: [stage, command, will,
    folder, why]}``, each cell with its whitespace removed (rich wraps a long cell onto the
    next lines, whose first cell is empty)."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.split("dry run:")[0].split("lifecycle run:")[0].splitlines():
        if line.count("│") != 6:  # a border, the header, or another table
            current = None
            continue
        cells = ["".join(cell.split()) for cell in line.split("│")[1:-1]]
        if cells[0]:
            current = rows.setdefault(cells[0], cells)
        elif current is not None:
            current[:] = [a + b for a, b in zip(current, cells, strict=True)]
    return rows


def squeezed(text: str) -> str:
    """``text`` without whitespace, to compare with a cell of :func:`plan_rows`."""
    return "".join(text.split())


def env() -> dict[str, str]:
    """The environment of a ``python -m lifecycle`` subprocess: offline, no update check."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


class KillOnce(L.Callback):
    """SIGKILL this process when a run starts a batch after ``step`` optimizer steps (so the
    checkpoints saved at ``step`` exist), unless ``mark`` exists; ``mark`` is written (and
    synced) first, so the kill happens once and a test can tell it from a crash.

    Args:
        step: the global step at which the process kills itself.
        mark: the file that says the kill happened.
    """

    def __init__(self, step: int, mark: str):
        self.step = step
        self.mark = mark

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step < self.step or Path(self.mark).exists():
            return
        Path(self.mark).parent.mkdir(parents=True, exist_ok=True)
        with open(self.mark, "w") as f:
            f.write(str(trainer.global_step))
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
