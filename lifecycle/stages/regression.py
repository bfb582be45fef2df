"""``RegressionModule``: regression with mean squared error."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection, R2Score
from torchmetrics.aggregation import CatMetric

from lifecycle.errors import ConfigError
from lifecycle.interfaces import StageOutput, figure_outputs
from lifecycle.models.heads import LinearHead
from lifecycle.stages.supervised import SupervisedModule, trainer_datamodule
from lifecycle.training.optim import OptimizerFactory, SchedulerFactory

log = logging.getLogger(__name__)


def regression_metrics() -> MetricCollection:
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "r2": R2Score(),
        }
    )


class RegressionModule(SupervisedModule):
    """Regression of one target with any backbone: MSE on ``head(backbone(*batch[input_key]))``.

    The loss is computed on standardized targets (``(y - mean) / std`` with the training split's
    statistics, read from the DataModule's ``target_mean``/``target_std`` at fit time and kept in
    the checkpoint), so the optimizer sees well-scaled values; predictions and the logged MSE,
    RMSE, MAE and R² are in the target's own units.

    Args:
        backbone: any ``nn.Module`` with ``out_features`` (e.g. :class:`~lifecycle.models.MLP`).
        head: maps features to one value; default a :class:`LinearHead`.
        head_dropout: dropout before the default head's linear layer.
        optimizer: see :class:`~lifecycle.stages.ClassificationModule`.
        scheduler: see :class:`~lifecycle.stages.ClassificationModule`.
        scheduler_interval: see :class:`~lifecycle.stages.ClassificationModule`.
        monitor: metric that ``ReduceLROnPlateau`` watches.
        l1_penalty: weight of an explicit L1 penalty on weights.
        standardize_target: learn on standardized targets (see above).
        input_key: the batch field(s) fed to the backbone, in order.
        compile: ``torch.compile`` the backbone.
        channels_last: run image convolutions in NHWC memory layout (faster on CPU with oneDNN,
            same results).
    """

    target_key = "target"
    outputs: ClassVar[dict[str, StageOutput]] = {
        **SupervisedModule.outputs,
        **figure_outputs("predicted_vs_true"),
    }

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None = None,
        head_dropout: float = 0.0,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        monitor: str = "val/loss",
        l1_penalty: float = 0.0,
        standardize_target: bool = True,
        input_key: str | list[str] = "features",
        compile: bool = False,
        channels_last: bool = False,
    ):
        head = head if head is not None else LinearHead(None, 1, head_dropout)
        super().__init__(
            backbone,
            head,
            optimizer,
            scheduler,
            scheduler_interval,
            monitor,
            l1_penalty,
            input_key,
            compile,
            channels_last,
        )
        self.standardize_target = standardize_target
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.val_metrics = regression_metrics().clone(prefix="val/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_metrics = regression_metrics().clone(prefix="test/")
        self.test_predictions = CatMetric()
        self.test_targets = CatMetric()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.standardize_target:
            self.use_target_statistics()

    def use_target_statistics(self) -> None:
        """Learn on targets standardized with the DataModule's ``target_mean``/``target_std``
        (:class:`~lifecycle.interfaces.RegressionData`).

        Raises:
            ConfigError: the DataModule has no such attributes, or they are unset or unusable.
        """
        fix = (
            "give the DataModule `target_mean` and `target_std` (the training split's, set in "
            "its `setup`; see lifecycle.interfaces.RegressionData), or set "
            "`model.init_args.standardize_target: false` to learn on raw targets"
        )
        mean = self.datamodule_require("target_mean", fix)
        std = self.datamodule_require("target_std", fix)
        if trainer_datamodule(self) is None:
            log.warning(
                "RegressionModule: no DataModule, so no target statistics: the targets are "
                "learnt unstandardized. Fix: train with a DataModule that has `target_mean` and "
                "`target_std`, or set `standardize_target: false`."
            )
            return
        if mean is None or std is None or not float(std) > 0:
            raise ConfigError(
                f"{type(trainer_datamodule(self)).__name__} gives target_mean={mean!r}, "
                f"target_std={std!r} after setup: no usable target statistics (a DataModule for "
                f"classification?). Fix: {fix}."
            )
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(float(std))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Predictions in the target's own units, shape (B,)."""
        return self.head(self.backbone(*inputs)).squeeze(-1) * self.target_std + self.target_mean

    def _shared_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self.forward_batch(batch)
        target = batch[self.target_key].to(pred.dtype)
        loss = F.mse_loss(
            (pred - self.target_mean) / self.target_std,
            (target - self.target_mean) / self.target_std,
        )
        return loss, pred, target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._shared_step(batch)
        self.log("train/loss", loss, prog_bar=True)
        return self.regularized(loss)

    def _eval_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, pred, target)`` of the batch's real records (padding left out, see
        :meth:`real_records`); the loss is 0 for a batch of padding alone."""
        pred = self.forward_batch(batch)
        pred, target = self.real_records(batch, pred, batch[self.target_key].to(pred.dtype))
        if not len(target):
            return pred.new_zeros(()), pred, target
        loss = F.mse_loss(
            (pred - self.target_mean) / self.target_std,
            (target - self.target_mean) / self.target_std,
        )
        return loss, pred, target

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, pred, target = self._eval_step(batch)
        if len(target):  # torchmetrics refuse empty updates
            self.val_metrics.update(pred, target)
        self.log_eval_loss("val/loss", self.val_loss, loss, len(target), prog_bar=True)
        self.log_dict(self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, pred, target = self._eval_step(batch)
        if len(target):
            self.test_metrics.update(pred, target)
            self.test_predictions.update(pred)
            self.test_targets.update(target)
        self.log_eval_loss("test/loss", self.test_loss, loss, len(target))
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        (pred,) = self.real_records(batch, self.forward_batch(batch))
        out = {"prediction": pred}
        if self.target_key in batch:
            (out["target"],) = self.real_records(batch, batch[self.target_key])
        return out

    def on_test_epoch_start(self) -> None:
        self.test_predictions.reset()
        self.test_targets.reset()

    def report_details(self) -> dict:
        return {"num_samples": int(self.test_targets.compute().numel())}

    def report_figures(self) -> dict:
        """Predicted against true values of the last test run."""
        from lifecycle.evaluation.plots import plot_predicted_vs_true

        return {
            "predicted_vs_true": plot_predicted_vs_true(
                self.test_predictions.compute(), self.test_targets.compute()
            )
        }
