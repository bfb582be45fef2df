"""``ClassificationModule``: binary and multiclass classification with cross-entropy."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    AUROC,
    ROC,
    Accuracy,
    ConfusionMatrix,
    F1Score,
    Precision,
    Recall,
)

from lifecycle.errors import ConfigError
from lifecycle.interfaces import StageOutput, figure_outputs
from lifecycle.models.heads import LinearHead
from lifecycle.stages.supervised import SupervisedModule
from lifecycle.training.optim import OptimizerFactory, SchedulerFactory


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, precision, recall, F1 and AUROC: of the positive class for 2 classes, macro-averaged above."""
    if num_classes == 2:
        kw = {"task": "binary"}
    else:
        kw = {"task": "multiclass", "num_classes": num_classes, "average": "macro"}
    return MetricCollection(
        {
            "accuracy": Accuracy(**{**kw, "average": "micro"} if num_classes > 2 else kw),
            "precision": Precision(**kw),
            "recall": Recall(**kw),
            "f1": F1Score(**kw),
            "auroc": AUROC(**kw),
        }
    )


class ClassificationModule(SupervisedModule):
    """Classification with any backbone: cross-entropy on ``head(backbone(*batch[input_key]))``.

    Logs ``train/loss``, ``train/accuracy`` and, for validation and test, ``{stage}/loss``,
    ``accuracy``, ``precision``, ``recall``, ``f1`` and ``auroc`` (macro-averaged for more than two
    classes; of class 1 for two). After testing, the confusion matrix and ROC curves are
    available to :class:`~lifecycle.evaluation.report.EvaluationReport` through
    :meth:`report_figures`.

    Args:
        backbone: any ``nn.Module`` mapping inputs to features, with an ``out_features`` attribute
            (see :mod:`lifecycle.models`), or the user's own by ``class_path``.
        num_classes: number of classes (2 for binary).
        head: maps features to ``num_classes`` logits; default a :class:`LinearHead`. A head
            whose ``in_features`` is left out (``null``) gets the backbone's ``out_features``.
        head_dropout: dropout before the default head's linear layer.
        optimizer: a callable building the optimizer from parameters; in YAML any ``torch.optim``
            class by ``class_path`` (SGD with momentum/Nesterov, Adagrad, RMSprop, Adam, AdamW,
            ...). Weight decay (L2) is the optimizer's ``weight_decay``.
        scheduler: a callable building a learning-rate scheduler from the optimizer, or ``None``:
            ``StepLR``, ``OneCycleLR``, ``ReduceLROnPlateau``, :class:`~lifecycle.training.optim.WarmupCosineLR`, ...
            ``total_steps`` is filled in from the Trainer when left unset.
        scheduler_interval: ``"step"`` or ``"epoch"``; default per step for one-cycle and
            warm-up cosine, per epoch otherwise.
        monitor: metric that ``ReduceLROnPlateau`` watches.
        l1_penalty: weight of an explicit L1 penalty on weights (0 disables it).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        mix: batch-level mixing of training inputs: ``"mixup"`` (Zhang et al. 2018: a convex
            combination of two images), ``"cutmix"`` (Yun et al. 2019: a box of one image pasted
            into another), or ``None``. The loss is ``lam * CE(y_a) + (1 - lam) * CE(y_b)`` with
            ``lam`` the share of the first input (for CutMix, its share of the area).
            Validation, test and predict never mix. Needs float inputs (images, features).
        mix_alpha: ``lam ~ Beta(mix_alpha, mix_alpha)``; 0.2 suits MixUp, 1.0 CutMix.
        mix_prob: share of training batches that are mixed.
        class_weights: per-class loss weights (e.g. for imbalanced data), or ``None``.
        input_key: the batch field(s) fed to the backbone, in order: ``image`` for images,
            ``features`` for tables, ``[input_ids, attention_mask]`` for text. Default: the
            backbone's ``input_keys`` attribute when it has one (the text backbones do), else ``image``.
        compile: ``torch.compile`` the backbone.
        channels_last: run image convolutions in NHWC memory layout (faster on CPU with oneDNN,
            same results).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head: nn.Module | None = None,
        head_dropout: float = 0.0,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        monitor: str = "val/loss",
        l1_penalty: float = 0.0,
        label_smoothing: float = 0.0,
        mix: Literal["mixup", "cutmix"] | None = None,
        mix_alpha: float = 0.2,
        mix_prob: float = 1.0,
        class_weights: list[float] | None = None,
        input_key: str | list[str] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ):
        if num_classes < 2:
            raise ConfigError(
                f"`num_classes` must be >= 2, got {num_classes}. Fix: set "
                "`model.init_args.num_classes` to the number of classes in the data."
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")
        if mix not in (None, "mixup", "cutmix"):
            raise ConfigError(f"`mix` must be 'mixup', 'cutmix' or null, got {mix!r}.")
        if mix is not None and (mix_alpha <= 0 or not 0 < mix_prob <= 1):
            raise ConfigError(
                f"`mix_alpha` must be > 0 and `mix_prob` in (0, 1], got {mix_alpha}, {mix_prob}."
            )
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(
                f"`class_weights` has {len(class_weights)} entries for {num_classes} classes."
            )
        head = head if head is not None else LinearHead(None, num_classes, head_dropout)
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
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mix, self.mix_alpha, self.mix_prob = mix, mix_alpha, mix_prob
        weights = (
            torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        )
        self.register_buffer("class_weights", weights, persistent=False)
        task = (
            {"task": "binary"}
            if num_classes == 2
            else {"task": "multiclass", "num_classes": num_classes}
        )
        self.train_accuracy = Accuracy(**task)
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")
        self.test_confusion = ConfusionMatrix(**task)
        self.test_roc = ROC(**task)
        self.test_per_class = MetricCollection(
            {
                name: cls(task="multiclass", num_classes=num_classes, average=None)
                for name, cls in (
                    ("precision", Precision),
                    ("recall", Recall),
                    ("f1", F1Score),
                    ("auroc", AUROC),
                )
            }
        )

    accepts_unlabeled = False  # records with label -1 (a transfer set): distillation only
    outputs: ClassVar[dict[str, StageOutput]] = {
        **SupervisedModule.outputs,
        **figure_outputs("confusion_matrix", "roc_curve"),
    }

    def setup(self, stage: str) -> None:
        super().setup(stage)
        unlabeled = self.datamodule_attr("unlabeled_count", 0)
        if stage == "fit" and unlabeled and not self.accepts_unlabeled:
            raise ConfigError(
                f"The training data holds {unlabeled} records without labels (`unlabeled_rest: "
                f"true`), which {type(self).__name__} cannot learn from. Fix: set "
                "`data.init_args.unlabeled_rest: false`, or distil a teacher into this model "
                "(lifecycle.stages.distillation.DistillationModule), which scores them."
            )
        data_classes = self.datamodule_require(
            "num_classes",
            "give the DataModule a `num_classes` attribute (lifecycle.interfaces."
            "ClassificationData), set in its `setup`",
        )
        if data_classes is not None and data_classes != self.num_classes:
            raise ConfigError(
                f"The data has {data_classes} classes but the model's `num_classes` is {self.num_classes}. "
                f"Fix: set `model.init_args.num_classes: {data_classes}`."
            )

    # ----------------------------------------------------------------- steps
    def _shared_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.forward_batch(batch)
        target = batch[self.target_key]
        return self._loss(logits, target, batch.get("weight")), logits, target

    def _loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy; with per-record ``weight`` (a cleaned manifest's down-weighting, in
        training batches only), the weighted mean over the batch."""
        if weight is None:
            return F.cross_entropy(
                logits, target, weight=self.class_weights, label_smoothing=self.label_smoothing
            )
        losses = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        weight = weight.to(losses.dtype)
        return (losses * weight).sum() / weight.sum().clamp_min(1e-8)

    def _mixed_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MixUp or CutMix on the batch's first input; the loss weighs both targets by ``lam``."""
        inputs = self.inputs(batch)
        target = batch[self.target_key]
        x, lam, perm = self._mix_input(inputs[0])
        logits = self(x, *inputs[1:])
        weight = batch.get("weight")
        loss = lam * self._loss(logits, target, weight) + (1 - lam) * self._loss(
            logits, target[perm], weight[perm] if weight is not None else None
        )
        return loss, logits, target

    def _mix_input(self, x: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """``(mixed x, lam, perm)``: ``x`` mixed with ``x[perm]`` by MixUp or CutMix, ``lam``
        the share of the first input (for CutMix, of the area)."""
        if not x.is_floating_point() or (self.mix == "cutmix" and x.ndim != 4):
            raise ConfigError(
                f"`mix: {self.mix}` needs float {'images (B, C, H, W)' if self.mix == 'cutmix' else 'inputs'}"
                f", but the batch's '{self.input_keys[0]}' is {tuple(x.shape)} {x.dtype}. "
                "Fix: set `mix: null` (token ids cannot be mixed)."
            )
        lam = float(torch.distributions.Beta(self.mix_alpha, self.mix_alpha).sample())
        perm = torch.randperm(len(x), device=x.device)
        if self.mix == "mixup":
            x = lam * x + (1 - lam) * x[perm]
        else:
            height, width = x.shape[-2:]
            cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
            cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
            x = x.clone()
            x[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (height * width)
        return x, lam, perm

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=-1)
        return probs[:, 1] if self.num_classes == 2 else probs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        mixed = self.mix is not None and float(torch.rand(())) < self.mix_prob
        loss, logits, target = self._mixed_step(batch) if mixed else self._shared_step(batch)
        # update() only: the epoch value is computed once at epoch end (forward() would also
        # compute a per-batch value nobody logs, a measurable cost per step)
        self.train_accuracy.update(self._scores(logits.detach()), target)
        self.log("train/loss", loss, prog_bar=True)
        return self.regularized(loss)

    def on_train_epoch_end(self) -> None:
        # logged once per epoch, not per step: each self.log call costs about 1 ms of Python
        self.log("train/accuracy", self.train_accuracy)

    def _eval_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, logits, target)`` of the batch's real records (padding left out, see
        :meth:`real_records`); the loss is 0 for a batch of padding alone."""
        logits = self.forward_batch(batch)
        logits, target = self.real_records(batch, logits, batch[self.target_key])
        weight = batch.get("weight")
        if weight is not None:
            (weight,) = self.real_records(batch, weight)
        loss = self._loss(logits, target, weight) if len(target) else logits.new_zeros(())
        return loss, logits, target

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, target = self._eval_step(batch)
        if len(target):  # torchmetrics refuse empty updates
            self.val_metrics.update(self._scores(logits), target)
        self.log_eval_loss("val/loss", self.val_loss, loss, len(target), prog_bar=True)
        self.log_dict(self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, target = self._eval_step(batch)
        if len(target):
            scores = self._scores(logits)
            self.test_metrics.update(scores, target)
            self.test_confusion.update(scores, target)
            self.test_roc.update(scores, target)
            self.test_per_class.update(logits.float().softmax(-1), target)
        self.log_eval_loss("test/loss", self.test_loss, loss, len(target))
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        (probs,) = self.real_records(batch, self.forward_batch(batch).float().softmax(dim=-1))
        out = {"prediction": probs.argmax(dim=-1), "probabilities": probs}
        if self.target_key in batch:
            (out["label"],) = self.real_records(batch, batch[self.target_key])
        return out

    def on_test_epoch_start(self) -> None:
        for metric in (self.test_confusion, self.test_roc, self.test_per_class):
            metric.reset()

    # ----------------------------------------------------------------- report
    def class_names(self) -> list[str]:
        names = self.datamodule_attr("class_names")
        return (
            list(names)
            if names and len(names) == self.num_classes
            else [str(i) for i in range(self.num_classes)]
        )

    def report_details(self) -> dict:
        """Per-class precision, recall and F1 and the confusion matrix of the last test run."""
        per_class = {k: v.tolist() for k, v in self.test_per_class.compute().items()}
        names = self.class_names()
        return {
            "per_class": {
                name: {k: per_class[k][i] for k in per_class} for i, name in enumerate(names)
            },
            "confusion_matrix": self.test_confusion.compute().tolist(),
            "class_names": names,
        }

    def report_figures(self) -> dict:
        """The confusion matrix and ROC curve(s) of the last test run as matplotlib figures."""
        from lifecycle.evaluation.plots import plot_confusion_matrix, plot_roc

        names = self.class_names()
        fpr, tpr, _ = self.test_roc.compute()
        auroc = self.test_per_class["auroc"].compute()
        if self.num_classes == 2:  # one curve, of the positive class
            fpr, tpr, names, auroc = [fpr], [tpr], [names[1]], auroc[1:]
        return {
            "confusion_matrix": plot_confusion_matrix(
                self.test_confusion.compute(), names if self.num_classes > 2 else self.class_names()
            ),
            "roc_curve": plot_roc(fpr, tpr, names, auroc.tolist()),
        }
