"""Callbacks that write what a run produced into its run folder.

:class:`EvaluationReport` writes ``metrics.json`` and the stage's figures (confusion matrix and
ROC curves for classification, predicted-vs-true for regression) after ``test``.
:class:`PredictionWriter` writes ``predictions.csv`` after ``predict``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

log = logging.getLogger(__name__)


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
    """After ``predict``: ``predictions.csv`` in the run folder, one row per record, in the order
    of the predicted dataset.

    Columns: ``index`` (the record's position in the predicted dataset), ``source`` (the file or
    row it came from, when the DataModule lists them in ``predict_sources``), then what
    ``predict_step`` returns for each batch (see :func:`prediction_columns`): from the
    toolkit's stages ``prediction``, the true ``label``/``target`` when the data has one, and
    ``prob_<class>`` per class for classifiers. Under a multi-process strategy (DDP, FSDP, DeepSpeed) rank 0 gathers every
    rank's share and writes the one file: each record once, the padding that evens out the
    ranks' shards left out (:class:`~lifecycle.data.loading.PaddedDataset`).

    Args:
        filename: name of the CSV file in the run folder.
    """

    def __init__(self, filename: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        out = run_dir(trainer)  # a broadcast under DDP: every rank asks, even one with nothing
        table = gathered_predictions(trainer, predictions, batch_indices)
        self.path = out / self.filename
        if not trainer.is_global_zero or not table["columns"]:
            return
        index, columns = table["index"], table["columns"]
        if any(i is None for i in index):
            if trainer.world_size > 1:
                raise RuntimeError(
                    "PredictionWriter could not tell which record each prediction of a "
                    "multi-process run belongs to (Lightning gave no batch indices): predict "
                    "through DataLoaders, as the lifecycle DataModules give them."
                )
            index = list(range(len(index)))
        order = sorted(range(len(index)), key=index.__getitem__)
        seen, unique = set(), []
        for row in order:
            if index[row] not in seen:
                seen.add(index[row])
                unique.append(row)
        if len(unique) < len(order):
            # a sampler that repeats records to even out ranks (torch's DistributedSampler)
            log.warning(
                "predictions.csv: %d repeated predictions of the same records left out (each "
                "record is written once).",
                len(order) - len(unique),
            )
        probs = columns.pop("probabilities", None)
        names = None
        if probs is not None:
            names = getattr(pl_module, "class_names", lambda: None)() or [
                str(i) for i in range(probs.shape[1])
            ]
        sources = getattr(trainer.datamodule, "predict_sources", None)
        size = _predict_size(trainer)
        sources = sources if sources is not None and len(sources) == size else None
        out.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            header = ["index"] + (["source"] if sources else []) + list(columns)
            header += [f"prob_{n}" for n in names] if probs is not None else []
            writer.writerow(header)
            for row in unique:
                i = index[row]
                line = (
                    [i]
                    + ([sources[i]] if sources else [])
                    + [_cell(columns[k][row]) for k in columns]
                )
                if probs is not None:
                    line += [f"{p:.6f}" for p in probs[row].tolist()]
                writer.writerow(line)


def _tensor_columns(name: str, value) -> dict[str, torch.Tensor]:
    value = torch.as_tensor(value).detach().cpu()
    value = value.reshape(1) if value.ndim == 0 else value.reshape(len(value), -1)
    if value.shape[1] == 1:
        return {name: value[:, 0]}
    return {f"{name}_{j}": value[:, j] for j in range(value.shape[1])}


def prediction_columns(output) -> dict[str, torch.Tensor]:
    """The CSV columns of what ``predict_step`` returned for one batch, one row per record:

    - a dict: its keys (``probabilities``, one row of class probabilities per record, becomes
      the ``prob_<class>`` columns);
    - a tensor: ``prediction`` when it holds one value per record, else ``prediction_<j>`` per
      value (a tensor of logits of shape ``(records, k)`` gives ``prediction_0`` ...);
    - a tuple or list of tensors: ``output_<i>`` for the i-th (``output_<i>_<j>`` likewise).

    Raises:
        TypeError: anything else, naming what it got.
    """
    if isinstance(output, dict):
        return dict(output)
    if isinstance(output, torch.Tensor):
        return _tensor_columns("prediction", output)
    if isinstance(output, tuple | list) and all(isinstance(o, torch.Tensor) for o in output):
        columns = {}
        for i, value in enumerate(output):
            columns.update(_tensor_columns(f"output_{i}", value))
        return columns
    raise TypeError(
        f"PredictionWriter cannot write a {type(output).__name__} returned by predict_step: "
        "return a dict of tensors (one row per record each), a tensor, or a tuple of tensors."
    )


def _is_batch_output(value) -> bool:
    """Whether ``value`` is one batch's ``predict_step`` output rather than a dataloader's list
    of them."""
    if isinstance(value, dict | torch.Tensor):
        return True
    return isinstance(value, tuple | list) and all(isinstance(v, torch.Tensor) for v in value)


def _position(index) -> int | None:
    """A record's position from a sampler's index: an ``(epoch, i)`` pair or ``i``; ``None``
    is padding."""
    if index is None:
        return None
    return int(index[1] if isinstance(index, tuple | list) else index)


def _local_table(predictions, batch_indices, dataloaders: int | None = None) -> dict:
    """This rank's predictions as ``{"index": [position or None], "columns": {key: tensor}}``
    without padding rows: a module's ``predict_step`` may return a row per record of the batch
    (padding included, dropped here by its ``None`` index) or per real record only.
    ``dataloaders``: how many were predicted (Lightning nests the outputs per dataloader when
    there are several); ``None``: told from the outputs, a list of tensors being one batch's."""
    if not predictions:
        return {"index": [], "columns": {}}
    if dataloaders is not None:
        nested = dataloaders > 1
    else:
        nested = isinstance(predictions[0], list) and not _is_batch_output(predictions[0])
    batches = predictions[0] if nested else predictions
    batches = [prediction_columns(b) for b in batches]
    indices = batch_indices[0] if batch_indices and isinstance(batch_indices[0], list) else []
    if indices and not isinstance(indices[0], list):  # one dataloader, already flattened
        indices = batch_indices
    index, keep_rows = [], []
    for b, batch in enumerate(batches):
        rows = len(next(iter(batch.values())))
        if b >= len(indices):  # no batch indices from Lightning: single-process order
            index += [None] * rows
            keep_rows.append(torch.ones(rows, dtype=torch.bool))
            continue
        positions = [_position(i) for i in indices[b]]
        real = [p for p in positions if p is not None]
        if rows == len(positions):
            keep_rows.append(torch.tensor([p is not None for p in positions], dtype=torch.bool))
        elif rows == len(real):
            keep_rows.append(torch.ones(rows, dtype=torch.bool))
        else:
            raise RuntimeError(
                f"predict batch {b} gave {rows} predictions for {len(positions)} records "
                f"({len(positions) - len(real)} of them padding): predict_step must return one "
                "row per record of the batch, or per real record."
            )
        index += real
    keep = torch.cat(keep_rows)
    columns = {key: torch.cat([b[key].detach().cpu() for b in batches])[keep] for key in batches[0]}
    return {"index": index, "columns": columns}


def gathered_predictions(
    trainer: L.Trainer, predictions, batch_indices, all_ranks: bool = False
) -> dict:
    """The predictions of every rank of a ``predict`` run, without the padding that evens out
    the ranks' shards, as ``{"index": [position], "columns": {key: tensor}}``: ``index[j]`` is
    the position in the predicted dataset of the record of row ``j`` (``None`` where Lightning
    gave no batch indices: a single process's order then). Every rank must call it (a
    collective); rank 0 gets the whole table, the other ranks their own share, or the whole
    table too with ``all_ranks``.

    Args:
        trainer: the Trainer that ran ``predict``.
        predictions: what a ``BasePredictionWriter`` gets in ``write_on_epoch_end`` (what
            ``predict_step`` returned, per batch: see :func:`prediction_columns`); the first
            dataloader's are used.
        batch_indices: the matching batch indices (``write_on_epoch_end``'s).
        all_ranks: give every rank the whole table.
    """
    import torch.distributed as dist

    batches = getattr(trainer, "num_predict_batches", None)
    table = _local_table(predictions, batch_indices, len(batches) if batches else None)
    if trainer.world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return table
    if all_ranks:
        tables = [None] * dist.get_world_size()
        dist.all_gather_object(tables, table)
    else:
        tables = [None] * dist.get_world_size() if trainer.is_global_zero else None
        dist.gather_object(table, tables, dst=0)
        if not trainer.is_global_zero:
            return table
    tables = [t for t in tables if t["columns"]]
    if not tables:
        return {"index": [], "columns": {}}
    return {
        "index": [i for t in tables for i in t["index"]],
        "columns": {k: torch.cat([t["columns"][k] for t in tables]) for k in tables[0]["columns"]},
    }


def _predict_size(trainer: L.Trainer) -> int | None:
    """Records in the (first) predict dataset, or ``None`` when it has no length."""
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        return None


def _cell(value: torch.Tensor):
    v = value.item()
    return f"{v:.6g}" if isinstance(v, float) else v
