"""``DistillationModule``: the stage that trains a student classifier to match a frozen teacher."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import ClassVar, Literal

import torch
from torch import nn

from lifecycle.compat import MovesUnregisteredModules
from lifecycle.data.splits import UNLABELED
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds, StageOutput, check_data_needs_met, optional, require
from lifecycle.stages.classification import ClassificationModule
from lifecycle.stages.distillation.features import (
    FeatureAdapter,
    FeatureCapture,
    adapter_key,
    find_layer,
)
from lifecycle.stages.distillation.losses import (
    FEATURE_LOSSES,
    FeatureLoss,
    feature_matching_loss,
    soft_target_loss,
)
from lifecycle.stages.distillation.teacher import (
    check_teacher_tokenization,
    parameter_count,
    renormalization,
    teacher_normalization,
    teacher_tokenizer,
)
from lifecycle.stages.supervised import trainer_datamodule
from lifecycle.training.optim import OptimizerFactory, SchedulerFactory

log = logging.getLogger(__name__)

ROLE = "DistillationModule"


class DistillationModule(MovesUnregisteredModules, ClassificationModule):
    """Train a student classifier to match a frozen teacher (knowledge distillation).

    Loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, label)``
    (Hinton, Vinyals and Dean 2015), plus ``feature_weight`` times a feature loss for each pair
    in ``feature_layers`` (Romero et al. 2015, FitNets). Training records without a label
    (label ``-1``: the DataModules' ``unlabeled_rest`` transfer set) get the distillation terms
    only. Validation, test and predict see the student alone, with
    :class:`ClassificationModule`'s metrics.

    **The teacher** is frozen: eval mode (dropout off, BatchNorm on its running statistics), no
    gradients, not in the optimizer, and not a registered submodule, so it is neither in the
    checkpoints (which hold the student's ``backbone``/``head`` and any feature adapters, under
    the keys a :class:`ClassificationModule` has) nor wrapped by DDP. It moves with the module
    (device and dtype). Under DDP and FSDP2 every process holds a whole replica of the teacher
    and runs it on its own share of the batch; only the student (and adapters) are sharded by
    FSDP2.

    **Inputs.** Teacher and student see the same batch, hence the same augmented view (and,
    with ``mix``, the same mixed images). A text teacher with its own tokenizer (a
    :func:`load_teacher` checkpoint or transformers folder, or a :class:`PretrainedTransformer`
    backbone) gets its own tokenization of the same texts: :meth:`data_needs` hands its
    tokenizer to the DataModule before it builds its datasets, and the DataModule adds
    ``teacher_input_ids``/``teacher_attention_mask`` to training batches where the teacher's
    vocabulary differs from the student's. An image teacher trained with another normalization
    gets the student's images re-normalized to its own.

    **What it reads from the DataModule** (:class:`~lifecycle.interfaces.ExampleBatches`):
    ``example_batch("train")``, to check the teacher's classes and size the feature adapters
    before training, and with ``cache_teacher`` ``split_dataset("train")``, to size the cache;
    a DataModule without them is refused, naming the missing one. Optional: ``mean``/``std``
    (the student's normalization) and ``tokenizer``.

    **Cached teacher** (``cache_teacher``): the teacher's logits for each training record are
    stored the first time it is seen (keyed by the batch's ``index``) and reused in later
    epochs, so the teacher runs about once per record instead of once per epoch. That is valid
    only when a record looks the same every epoch: with training augmentation (image
    ``train_transforms``, token augmentation) or ``mix`` the teacher must score each new view,
    so caching is refused; so is caching with ``feature_layers`` (features are not cached).

    Args:
        teacher: the trained teacher: a module mapping its inputs to class logits, e.g. from
            :func:`load_teacher` (a recipe's ``class_path``), or any ``nn.Module`` with
            ``input_keys`` naming the batch fields it takes (default: the student's).
        student: the student's backbone (any backbone, as for :class:`ClassificationModule`).
        num_classes: classes; the teacher must output as many logits.
        temperature: softmax temperature ``T`` of the soft targets (Hinton used up to 20; small
            students prefer 2.5-4).
        alpha: weight of the distillation term; ``1 - alpha`` weighs cross-entropy on labels.
        feature_layers: ``{student layer: teacher layer}`` names (as in ``named_modules()``;
            student names are inside the student backbone, ``''`` being the whole backbone's
            output) whose outputs are matched.
        feature_weight: weight of the feature terms.
        feature_loss: ``"mse"`` or ``"cosine"`` (1 - cosine similarity per sample).
        feature_adapter: learn a projection (:class:`FeatureAdapter`) where a student feature's
            shape differs from the teacher's; ``False`` requires equal shapes.
        cache_teacher: store and reuse the teacher's logits (see above).
        head, head_dropout, optimizer, scheduler, scheduler_interval, monitor, label_smoothing,
            mix, mix_alpha, mix_prob, input_key, compile, channels_last: the student's, as for
            :class:`ClassificationModule`.

    Raises:
        ConfigError: an argument out of range, a teacher that is not a module or outputs
            another number of classes, a layer of ``feature_layers`` that does not exist, or
            ``cache_teacher`` with ``feature_layers`` or ``mix``.
    """

    accepts_unlabeled = True
    # a classifier's outputs; the checkpoints hold the student alone
    outputs: ClassVar[dict[str, StageOutput]] = {
        **ClassificationModule.outputs,
        **{
            name: replace(
                ClassificationModule.outputs[name],
                description=ClassificationModule.outputs[name].description
                + " (the student alone, under a ClassificationModule's keys: no teacher)",
            )
            for name in ("checkpoint", "best_checkpoint")
        },
    }

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        num_classes: int,
        temperature: float = 4.0,
        alpha: float = 0.5,
        feature_layers: dict[str, str] | None = None,
        feature_weight: float = 1.0,
        feature_loss: FeatureLoss = "mse",
        feature_adapter: bool = True,
        cache_teacher: bool = False,
        head: nn.Module | None = None,
        head_dropout: float = 0.0,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        monitor: str = "val/loss",
        label_smoothing: float = 0.0,
        mix: Literal["mixup", "cutmix"] | None = None,
        mix_alpha: float = 0.2,
        mix_prob: float = 1.0,
        input_key: str | list[str] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ):
        if temperature <= 0:
            raise ConfigError(f"`temperature` must be > 0, got {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"`alpha` must be in [0, 1], got {alpha}.")
        if feature_loss not in FEATURE_LOSSES:
            raise ConfigError(f"`feature_loss` must be 'mse' or 'cosine', got {feature_loss!r}.")
        if feature_weight < 0:
            raise ConfigError(f"`feature_weight` must be >= 0, got {feature_weight}.")
        if not isinstance(teacher, nn.Module):
            raise ConfigError(
                f"`teacher` must be a module, got {type(teacher).__name__}. Fix: build it with "
                "`class_path: lifecycle.stages.distillation.load_teacher`."
            )
        super().__init__(
            student,
            num_classes,
            head=head,
            head_dropout=head_dropout,
            optimizer=optimizer,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            monitor=monitor,
            label_smoothing=label_smoothing,
            mix=mix,
            mix_alpha=mix_alpha,
            mix_prob=mix_prob,
            input_key=input_key,
            compile=compile,
            channels_last=channels_last,
        )
        teacher.eval().requires_grad_(False)
        # not a registered submodule: out of the state_dict, the optimizer, DDP and .train()
        object.__setattr__(self, "teacher", teacher)
        teacher_classes = optional(teacher, "num_classes")
        if isinstance(teacher_classes, int) and teacher_classes != num_classes:
            raise ConfigError(
                f"The teacher outputs {teacher_classes} classes but the student has "
                f"`num_classes: {num_classes}`. Distillation needs the same classes in the same "
                f"order. Fix: set `num_classes: {teacher_classes}` (and the data's classes to "
                "the teacher's), or use a teacher trained on these classes."
            )
        keys = optional(teacher, "input_keys")
        self.teacher_input_keys = [keys] if isinstance(keys, str) else list(keys or self.input_keys)
        if mix is not None and self.teacher_input_keys != self.input_keys:
            raise ConfigError(
                f"`mix: {mix}` mixes the student's {self.input_keys}, but the teacher takes "
                f"{self.teacher_input_keys}: it could not see the same mixed input. Fix: set "
                "`mix: null`."
            )
        self.temperature = temperature
        self.alpha = alpha
        self.feature_layers = dict(feature_layers or {})
        self.feature_weight = feature_weight
        self.feature_loss = feature_loss
        self.feature_adapter = feature_adapter
        self.cache_teacher = cache_teacher
        if cache_teacher and self.feature_layers:
            raise ConfigError(
                "`cache_teacher` stores the teacher's logits only; feature distillation needs "
                "its live activations. Fix: set `cache_teacher: false` or drop `feature_layers`."
            )
        if cache_teacher and mix is not None:
            raise ConfigError(
                f"`cache_teacher` reuses the teacher's logits of each record, but `mix: {mix}` "
                "shows the student new mixed images every step. Fix: set `cache_teacher: false`."
            )
        self.capture = FeatureCapture()
        for s_name, t_name in self.feature_layers.items():
            # `compile` compiles the backbone in place: its layers keep their names
            self.capture.watch(
                find_layer(self.backbone, s_name, "student backbone"), "student", s_name
            )
            self.capture.watch(find_layer(teacher, t_name, "teacher"), "teacher", t_name)
        self.adapters = nn.ModuleDict()
        self.register_buffer("teacher_scale", None, persistent=False)
        self.register_buffer("teacher_shift", None, persistent=False)
        self.register_buffer("cached_logits", None, persistent=False)
        self.register_buffer("cached", None, persistent=False)
        self.teacher_calls = 0  # records the teacher scored (a cached teacher's stop growing)

    def unregistered_modules(self) -> list[nn.Module]:
        """The teacher: device and dtype moves of the module reach it too."""
        return [self.teacher]

    # ----------------------------------------------------------------- what the data must be
    def data_needs(self) -> DataNeeds:
        """The student's needs (:meth:`SupervisedModule.data_needs`) plus, for a teacher with
        a tokenizer (:func:`teacher_tokenizer`), that tokenizer: the DataModule then adds the
        teacher's own tokenization of each training text where its vocabulary differs from the
        student's (only the DataModule knows the student's tokenizer, trained in its setup).
        Known from the teacher alone; read by the DataModule before it builds its datasets."""
        needs = super().data_needs()
        tokenizer = teacher_tokenizer(self.teacher)
        return needs if tokenizer is None else replace(needs, teacher_tokenizer=tokenizer)

    def check_data_needs(self, datamodule) -> None:
        """The student's own needs must be met; the teacher's tokenizer only where it
        tokenizes differently (:func:`check_teacher_tokenization`, run in :meth:`setup`): a
        DataModule of the user's that tokenizes as the teacher does needs no
        ``apply_data_needs``."""
        check_data_needs_met(datamodule, super().data_needs(), type(self).__name__)

    # ----------------------------------------------------------------- setup checks
    def setup(self, stage: str) -> None:
        """Check, never change, the DataModule (:func:`check_teacher_tokenization`, then the
        classifier's checks); for ``fit``, map the student's normalization to the teacher's,
        probe both models on one training batch and size the teacher cache.

        Raises:
            ConfigError: a DataModule without what distillation reads (see the class
                docstring), ``cache_teacher`` with augmented training data, or a teacher and
                a student that do not fit (classes, feature shapes).
        """
        datamodule = trainer_datamodule(self)
        if stage == "fit":
            check_teacher_tokenization(self.teacher, datamodule)
        super().setup(stage)
        if stage != "fit":
            return
        self._set_teacher_normalization(datamodule)
        train = None
        if self.cache_teacher:
            if datamodule is None:
                raise ConfigError(
                    "`cache_teacher: true` sizes its cache from the DataModule's training "
                    "split (`split_dataset`), but the data came as plain DataLoaders. Fix: "
                    "train with a DataModule (lifecycle.interfaces.ExampleBatches), or set "
                    "`cache_teacher: false`."
                )
            split_dataset = require(
                datamodule,
                "split_dataset",
                f"{ROLE} with `cache_teacher: true` (to size the cache)",
                "give the DataModule a `split_dataset(split)` method returning the split's "
                "Dataset (lifecycle.interfaces.ExampleBatches), or set `cache_teacher: false`",
            )
            train = split_dataset("train")
        if self.cache_teacher and optional(train, "epoch_indexed", False):
            raise ConfigError(
                "`cache_teacher: true` scores each training record once, but the training data "
                "is augmented (`train_transforms` or token augmentation): later epochs would "
                "show the student views the teacher never scored. Fix: set `cache_teacher: "
                "false` (the teacher then scores each augmented view live, the same view the "
                "student sees), or turn training augmentation off."
            )
        if datamodule is not None:
            example_batch = require(
                datamodule,
                "example_batch",
                f"{ROLE} (to check the teacher's classes and size the feature adapters on one "
                "training batch)",
                "give the DataModule an `example_batch(split)` method returning one collated "
                "batch (lifecycle.interfaces.ExampleBatches)",
            )
            self._probe(example_batch("train"))
        elif self.feature_layers:
            raise ConfigError(
                "Feature distillation sizes its adapters on one training batch, taken from the "
                "DataModule's `example_batch`. Fix: train with a lifecycle DataModule (or give "
                "yours an `example_batch(split)` method)."
            )
        if train is not None:
            self.cached_logits = torch.zeros(len(train), self.num_classes)
            self.cached = torch.zeros(len(train), dtype=torch.bool)
        log.info(
            f"Distilling a teacher of {parameter_count(self.teacher):,} parameters into a "
            f"student of {parameter_count(self.backbone) + parameter_count(self.head):,}."
        )

    def _set_teacher_normalization(self, datamodule) -> None:
        """An image teacher trained with another normalization gets the student's images
        mapped to its own (:func:`renormalization`)."""
        mapping = renormalization(
            teacher_normalization(self.teacher),
            optional(datamodule, "mean"),
            optional(datamodule, "std"),
        )
        if mapping is not None:
            self.teacher_scale, self.teacher_shift = mapping

    def _probe(self, batch: dict) -> None:
        """One forward of both models on a small batch: the teacher's class count, the
        teacher's inputs, and the feature shapes that size the adapters."""
        device = next(self.parameters()).device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                teacher_logits = self._teacher_forward(batch, capture=True)
                with self.capture.recording():
                    self.forward_batch(batch)
        finally:
            self.train(was_training)
        features = self.capture.take()
        classes = teacher_logits.shape[-1]
        if classes != self.num_classes:
            raise ConfigError(
                f"The teacher outputs {classes} classes but the student has `num_classes: "
                f"{self.num_classes}`. Distillation needs the same classes in the same order. "
                f"Fix: use a teacher trained on these {self.num_classes} classes."
            )
        for s_name, t_name in self.feature_layers.items():
            s_shape = tuple(features["student"][s_name].shape)
            t_shape = tuple(features["teacher"][t_name].shape)
            key = adapter_key(s_name)
            if s_shape == t_shape or key in self.adapters:
                continue
            if not self.feature_adapter:
                raise ConfigError(
                    f"Student layer {s_name!r} outputs {s_shape[1:]} per sample but teacher "
                    f"layer {t_name!r} outputs {t_shape[1:]}, and `feature_adapter` is off. "
                    "Fix: set `feature_adapter: true` (a learned projection) or pair layers "
                    "of the same shape."
                )
            # seeded from the run's seed alone, not from whatever drew random numbers before
            # setup: the same adapter on one device and on every rank of DDP or FSDP2
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + len(self.adapters))
                self.adapters[key] = FeatureAdapter(s_shape, t_shape).to(device)

    def sharded_modules(self) -> list[nn.Module]:
        """The student and the feature adapters; the teacher stays a whole replica on every
        process."""
        return [*super().sharded_modules(), *self.adapters.values()]

    # ----------------------------------------------------------------- teacher outputs
    def _teacher_inputs(self, batch: dict) -> list[torch.Tensor]:
        missing = [
            k for k in self.teacher_input_keys if k not in batch and f"teacher_{k}" not in batch
        ]
        if missing:
            raise KeyError(
                f"The teacher takes {self.teacher_input_keys} but the batch has no {missing} "
                f"(it has {sorted(batch)}). Fix: give the teacher an `input_keys` attribute "
                "naming the batch fields it takes."
            )
        xs = [batch.get(f"teacher_{k}", batch.get(k)) for k in self.teacher_input_keys]
        if self.teacher_scale is not None:
            xs = [x * self.teacher_scale + self.teacher_shift if x.ndim == 4 else x for x in xs]
        return xs

    def _teacher_forward(self, batch: dict, capture: bool = False, inputs=None) -> torch.Tensor:
        with self.capture.recording(capture), torch.no_grad():
            logits = self.teacher(*(inputs if inputs is not None else self._teacher_inputs(batch)))
        self.teacher_calls += len(logits)
        return logits.detach()

    def teacher_logits(self, batch: dict, inputs=None) -> torch.Tensor:
        """The teacher's logits for a training batch: from the cache where every record of the
        batch has been scored before (``cache_teacher``), else computed (and cached).

        Args:
            batch: the training batch.
            inputs: the teacher's inputs when they are not the batch's (mixed images).
        """
        if not self.cache_teacher or self.cached is None:
            return self._teacher_forward(batch, capture=bool(self.feature_layers), inputs=inputs)
        if "index" not in batch:
            raise KeyError(
                "`cache_teacher` keys the teacher's outputs by each record's `index`, which "
                f"the batch lacks (it has {sorted(batch)}). Fix: give training batches an "
                "`index` field (lifecycle's DataModules do), or set `cache_teacher: false`."
            )
        index = batch["index"]
        if bool(self.cached[index].all()):
            return self.cached_logits[index]
        logits = self._teacher_forward(batch)
        self.cached_logits[index] = logits.float()
        self.cached[index] = True
        return logits

    # ----------------------------------------------------------------- loss
    def _hard_loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """The classifier's cross-entropy over the labeled records only: unlabeled ones
        (``-1``) get weight 0, on top of any per-record ``weight``."""
        labeled = (target != UNLABELED).to(logits.dtype)
        if weight is not None:
            labeled = labeled * weight.to(logits.dtype)
        return self._loss(logits, target.clamp_min(0), labeled)

    def _feature_term(self) -> torch.Tensor:
        features = self.capture.take()
        terms = []
        for s_name, t_name in self.feature_layers.items():
            student = features["student"][s_name]
            teacher = features["teacher"][t_name].to(student.dtype)
            key = adapter_key(s_name)
            if key in self.adapters:
                student = self.adapters[key](student)
            terms.append(feature_matching_loss(student, teacher, self.feature_loss))
        return torch.stack(terms).sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target, weight = batch[self.target_key], batch.get("weight")
        inputs = self.inputs(batch)
        mixed = self.mix is not None and float(torch.rand(())) < self.mix_prob
        lam, perm, teacher_inputs = 1.0, None, None
        if mixed:
            mixed_x, lam, perm = self._mix_input(inputs[0])
            inputs = [mixed_x, *inputs[1:]]
            teacher_inputs = self._teacher_inputs({**batch, self.input_keys[0]: mixed_x})
        teacher = self.teacher_logits(batch, inputs=teacher_inputs)
        with self.capture.recording(bool(self.feature_layers)):
            logits = self(*inputs)
        soft = soft_target_loss(logits, teacher, self.temperature)
        hard = self._hard_loss(logits, target, weight)
        if perm is not None:
            hard = lam * hard + (1 - lam) * self._hard_loss(
                logits, target[perm], weight[perm] if weight is not None else None
            )
        loss = self.alpha * soft + (1 - self.alpha) * hard
        self.log("train/soft_loss", soft, on_step=False, on_epoch=True)
        self.log("train/hard_loss", hard, on_step=False, on_epoch=True)
        if self.feature_layers:
            features = self._feature_term()
            self.log("train/feature_loss", features, on_step=False, on_epoch=True)
            loss = loss + self.feature_weight * features
        labeled = target != UNLABELED
        if bool(labeled.any()):
            self.train_accuracy.update(self._scores(logits.detach()[labeled]), target[labeled])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Feature adapters are built when training starts (sized on a batch); loading a
        checkpoint to evaluate or deploy the student leaves them out."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("adapters.")]:
            if key.split(".")[1] not in self.adapters:
                del state[key]

    # ----------------------------------------------------------------- export
    def to_classifier(self) -> ClassificationModule:
        """The student alone as a :class:`ClassificationModule` (sharing its backbone and
        head): what to deploy, evaluate or save without the teacher and adapters."""
        student = ClassificationModule(
            self.backbone, self.num_classes, head=self.head, input_key=self.input_keys
        )
        return student.train(self.training)
