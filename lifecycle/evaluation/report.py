"""Callbacks that write what a run produced into its run folder.

:class:`EvaluationReport` writes ``metrics.json`` and the stage's figures (confusion matrix and
ROC curves for classification, predicted-vs-true for regression) after ``test``.
:class:`PredictionWriter` writes ``predictions.csv`` after ``predict``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the first logger's ``log_dir``, else the Trainer's ``default_root_dir``.
    Under DDP every rank must call it (``trainer.log_dir`` broadcasts rank 0's)."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def _scalar(value) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return None if math.isnan(value) else value


class EvaluationReport(Callback):
    """After ``test``: ``metrics.json`` and one PNG per figure the module offers, in the run folder.

    The module may implement ``report_details() -> dict`` (extra JSON, e.g. per-class scores)
    and ``report_figures() -> dict[str, Figure]`` (each saved as ``<name>.png``). Metrics are the
    ``test/`` entries the module logged, without the prefix.

    Args:
        dpi: resolution of the PNG files.
    """

    def __init__(self, dpi: int = 120):
        self.dpi = dpi
        self.written: list[Path] = []

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # computing metrics syncs across processes, so every rank takes part; rank 0 writes.
        details = pl_module.report_details() if hasattr(pl_module, "report_details") else {}
        figures = pl_module.report_figures() if hasattr(pl_module, "report_figures") else {}
        out = run_dir(trainer)  # `trainer.log_dir` is a broadcast: every rank asks for it
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            metrics = {
                key.removeprefix("test/"): _scalar(value)
                for key, value in sorted(trainer.callback_metrics.items())
                if key.startswith("test/")
            }
            ckpt = getattr(trainer, "ckpt_path", None)
            report = {"metrics": metrics, "checkpoint": str(ckpt) if ckpt else None, **details}
            path = out / "metrics.json"
            path.write_text(json.dumps(report, indent=2) + "\n")
            self.written = [path]
            for name, fig in figures.items():
                fig.savefig(out / f"{name}.png", dpi=self.dpi)
                self.written.append(out / f"{name}.png")


class PredictionWriter(BasePredictionWriter):
    """After ``predict``: ``predictions.csv`` in the run folder, one row per sample.

    Columns: ``index``, ``source`` (the file or row each sample came from, when the DataModule
    lists them in ``predict_sources``), ``prediction``, the true ``label``/``target`` when the
    data has one, and
    ``prob_<class>`` per class for classifiers. Under a multi-process strategy each process
    writes its own share to ``predictions-rank<N>.csv``.
    """

    def __init__(self, filename: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        out = run_dir(trainer)  # a broadcast under DDP: every rank asks, even one with nothing
        if not predictions:
            return
        batches = predictions[0] if isinstance(predictions[0], list) else predictions
        columns = {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in batches[0]}
        probs = columns.pop("probabilities", None)
        names = None
        if probs is not None:
            names = getattr(pl_module, "class_names", lambda: None)() or [
                str(i) for i in range(probs.shape[1])
            ]
        out.mkdir(parents=True, exist_ok=True)
        name = (
            self.filename
            if trainer.world_size == 1
            else self.filename.replace(".csv", f"-rank{trainer.global_rank}.csv")
        )
        self.path = out / name
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            rows = len(next(iter(columns.values())))
            sources = (
                getattr(trainer.datamodule, "predict_sources", None)
                if trainer.world_size == 1
                else None
            )
            sources = sources if sources is not None and len(sources) == rows else None
            header = ["index"] + (["source"] if sources else []) + list(columns)
            header += [f"prob_{n}" for n in names] if probs is not None else []
            writer.writerow(header)
            for i in range(rows):
                row = (
                    [i]
                    + ([sources[i]] if sources else [])
                    + [_cell(columns[k][i]) for k in columns]
                )
                if probs is not None:
                    row += [f"{p:.6f}" for p in probs[i].tolist()]
                writer.writerow(row)


def _cell(value: torch.Tensor):
    v = value.item()
    return f"{v:.6g}" if isinstance(v, float) else v
