"""``DistillationModule``: teacher-student knowledge distillation (Hinton et al. 2015; FitNets).

A trained teacher's predictions teach a smaller student. The student is an ordinary
backbone + head, so the distilled model is a :class:`~lifecycle.stages.classification.ClassificationModule`
in all but its loss: the same metrics, reports, checkpoints (with the student's keys) and
strategies. A recipe::

    model:
      class_path: lifecycle.stages.distillation.DistillationModule
      init_args:
        teacher:
          class_path: lifecycle.stages.distillation.load_teacher
          init_args: {path: runs/fashion_mnist-classify/version_0/checkpoints/last.ckpt}
        student:
          class_path: lifecycle.models.MLP
          init_args: {in_features: 784, hidden: [128]}
        num_classes: 10
        temperature: 4.0
        alpha: 0.7
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.data.splits import UNLABELED
from lifecycle.stages.classification import ClassificationModule
from lifecycle.training.optim import OptimizerFactory, SchedulerFactory

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- teachers
class TransformersClassifier(nn.Module):
    """A ``transformers`` sequence-classification model from a local folder as a teacher:
    ``forward(input_ids, attention_mask)`` returns its logits. The folder's tokenizer is the
    teacher's (``tokenizer``); no code from the folder runs (``trust_remote_code`` off)."""

    input_keys = ["input_ids", "attention_mask"]

    def __init__(self, path: str):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        from lifecycle.models.text import read_transformers_folder

        folder, config = read_transformers_folder(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False
        )
        self.num_classes = config.num_labels
        self.tokenizer = folder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def load_teacher(path: str) -> nn.Module:
    """A trained teacher, frozen, from a toolkit checkpoint or a ``transformers`` folder.

    - A ``.ckpt`` written by a ``lifecycle fit`` run (a classification stage): the module is
      rebuilt from the hyperparameters its recipe recorded, with the checkpoint's weights. The
      DataModule state saved with it gives the teacher's tokenizer (text) or normalization
      (images), so the student's data can differ in both.
    - A folder written by ``save_pretrained`` of a sequence-classification model (or a packaged
      model's name): see :class:`TransformersClassifier`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a checkpoint whose module cannot be rebuilt from it.
        UnsafeLoadError: a checkpoint whose hyperparameters name a module that is not a
            ``LightningModule``, or classes inside it that are not networks, optimizers or
            schedulers (refused before anything is built).
    """
    target = Path(path)
    if target.is_dir() or not target.suffix:
        teacher = TransformersClassifier(path)
    elif not target.is_file():
        raise FileNotFoundError(
            f"Teacher checkpoint {target.resolve()} does not exist. Fix: point `path` at a "
            "classification run's checkpoint (runs/<run>/version_N/checkpoints/*.ckpt) or at a "
            "transformers folder."
        )
    else:
        teacher = _load_checkpoint_teacher(target)
    return teacher.eval().requires_grad_(False)


def _load_checkpoint_teacher(path: Path) -> nn.Module:
    import lightning as L

    from lifecycle.artifacts import check_checkpoint, checkpoint_globals

    # refuses, before anything is built, a checkpoint naming anything but networks
    checkpoint = check_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "_instantiator" not in hparams:
        raise ValueError(
            f"{path} was written by a module built in Python, so it does not record how to "
            "rebuild its backbone. Fix: build the teacher in Python (load the weights with "
            "`load_state_dict`) and pass the module as `teacher`, or train the teacher from a "
            "recipe (`lifecycle fit --config ...`)."
        )
    with torch.serialization.safe_globals(checkpoint_globals(path)):
        module = L.LightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if not isinstance(module, ClassificationModule):
        raise ValueError(
            f"{path} holds a {type(module).__name__}, not a classifier: a teacher must output "
            "class logits. Fix: give a checkpoint of a classification run."
        )
    for state in checkpoint.values():
        if not isinstance(state, dict):
            continue
        if "tokenizer" in state:
            from lifecycle.data.tokenization import tokenizer_from_state

            module.tokenizer = tokenizer_from_state(state["tokenizer"])
        if state.get("mean") is not None and "eval_transforms" in state:
            module.normalization = (list(state["mean"]), list(state["std"]))
    return module


def teacher_tokenizer(teacher: nn.Module):
    """The tokenizer a teacher was trained with (object or folder), or ``None``."""
    found = getattr(teacher, "tokenizer", None)
    if found is None:
        info = getattr(getattr(teacher, "backbone", None), "pretrained", None)
        found = getattr(info, "tokenizer", None)
    return found


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- losses
def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's loss: KL(teacher || student) between the distributions softened at
    ``temperature``, times ``temperature ** 2`` (so its gradients keep their size as T
    changes), averaged over the batch."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


def _feature(output) -> torch.Tensor:
    """A hooked module's output as one tensor (transformers layers return tuples)."""
    if isinstance(output, tuple | list):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"A distilled layer must output a tensor, got {type(output).__name__}.")
    return output


def _layers(root: nn.Module) -> dict[str, nn.Module]:
    """``root``'s named submodules, less metrics (a LightningModule teacher holds them)."""
    from torchmetrics import Metric, MetricCollection

    skip = [n for n, m in root.named_modules() if n and isinstance(m, Metric | MetricCollection)]
    return {
        n: m
        for n, m in root.named_modules()
        if not any(n == s or n.startswith(s + ".") for s in skip)
    }


def _find_module(root: nn.Module, name: str, role: str) -> nn.Module:
    modules = _layers(root)
    if name not in modules:
        names = [n for n in modules if n]
        raise ValueError(
            f"The {role} has no layer named {name!r}. Its layers are: {names} "
            f"(and '' for the whole {role}). Fix: use one of these names in `feature_layers`."
        )
    return modules[name]


class FeatureAdapter(nn.Module):
    """A learned projection of a student feature to the teacher feature's shape (FitNets'
    regressor): a 1x1 convolution for feature maps (then resized to the teacher's height and
    width), a linear layer for vectors and token sequences."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        if len(student_shape) != len(teacher_shape):
            raise ValueError(
                f"Cannot project a student feature of shape {student_shape} to the teacher's "
                f"{teacher_shape}: they have different ranks. Fix: pair layers of the same kind "
                "(feature maps with feature maps, vectors with vectors)."
            )
        if len(student_shape) == 3 and student_shape[1] != teacher_shape[1]:
            raise ValueError(
                f"Token features of {student_shape[1]} and {teacher_shape[1]} positions do not "
                "line up (different tokenizers or lengths). Fix: distil pooled features instead, "
                "e.g. `feature_layers: {'': backbone}` (the student's and teacher's backbone outputs)."
            )
        self.size = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if len(student_shape) == 4:
            self.proj = nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
        else:
            self.proj = nn.Linear(student_shape[-1], teacher_shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


# --------------------------------------------------------------------------- the stage
class DistillationModule(ClassificationModule):
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
    backbone) gets its own tokenization of the same texts: the DataModule is asked to add
    ``teacher_input_ids``/``teacher_attention_mask`` to training batches. An image teacher
    trained with another normalization gets the student's images re-normalized to its own.

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
    """

    accepts_unlabeled = True

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        num_classes: int,
        temperature: float = 4.0,
        alpha: float = 0.5,
        feature_layers: dict[str, str] | None = None,
        feature_weight: float = 1.0,
        feature_loss: Literal["mse", "cosine"] = "mse",
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
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
        if feature_loss not in ("mse", "cosine"):
            raise ValueError(f"`feature_loss` must be 'mse' or 'cosine', got {feature_loss!r}.")
        if feature_weight < 0:
            raise ValueError(f"`feature_weight` must be >= 0, got {feature_weight}.")
        if not isinstance(teacher, nn.Module):
            raise ValueError(
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
        teacher_classes = getattr(teacher, "num_classes", None)
        if isinstance(teacher_classes, int) and teacher_classes != num_classes:
            raise ValueError(
                f"The teacher outputs {teacher_classes} classes but the student has "
                f"`num_classes: {num_classes}`. Distillation needs the same classes in the same "
                f"order. Fix: set `num_classes: {teacher_classes}` (and the data's classes to "
                "the teacher's), or use a teacher trained on these classes."
            )
        keys = getattr(teacher, "input_keys", None)
        self.teacher_input_keys = [keys] if isinstance(keys, str) else list(keys or self.input_keys)
        self.temperature = temperature
        self.alpha = alpha
        self.feature_layers = dict(feature_layers or {})
        self.feature_weight = feature_weight
        self.feature_loss = feature_loss
        self.feature_adapter = feature_adapter
        self.cache_teacher = cache_teacher
        if cache_teacher and self.feature_layers:
            raise ValueError(
                "`cache_teacher` stores the teacher's logits only; feature distillation needs "
                "its live activations. Fix: set `cache_teacher: false` or drop `feature_layers`."
            )
        if cache_teacher and mix is not None:
            raise ValueError(
                f"`cache_teacher` reuses the teacher's logits of each record, but `mix: {mix}` "
                "shows the student new mixed images every step. Fix: set `cache_teacher: false`."
            )
        self._captured: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        self._capturing = False
        self._hooks = []
        student_root = getattr(self.backbone, "_orig_mod", self.backbone)  # under torch.compile
        for s_name, t_name in self.feature_layers.items():
            self._hook(_find_module(student_root, s_name, "student backbone"), "student", s_name)
            self._hook(_find_module(teacher, t_name, "teacher"), "teacher", t_name)
        self.adapters = nn.ModuleDict()
        self.register_buffer("teacher_scale", None, persistent=False)
        self.register_buffer("teacher_shift", None, persistent=False)
        self.register_buffer("cached_logits", None, persistent=False)
        self.register_buffer("cached", None, persistent=False)
        self.teacher_calls = 0  # records the teacher scored (a cached teacher's stop growing)

    # ----------------------------------------------------------------- the teacher's place
    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.teacher._apply(fn)  # device and dtype moves reach the unregistered teacher
        return self

    def _hook(self, module: nn.Module, role: str, name: str) -> None:
        def capture(_module, _inputs, output):
            if self._capturing:
                self._captured[role][name] = _feature(output)

        self._hooks.append(module.register_forward_hook(capture))

    @staticmethod
    def _adapter_key(name: str) -> str:
        return re.sub(r"\W", "_", name) or "backbone"

    # ----------------------------------------------------------------- setup checks
    def setup(self, stage: str) -> None:
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        tokenizer = teacher_tokenizer(self.teacher)
        data_tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None and data_tokenizer is not None and stage == "fit":
            from lifecycle.data.tokenization import load_tokenizer

            if not hasattr(tokenizer, "get_vocab"):
                tokenizer = load_tokenizer(tokenizer)
            if tokenizer.get_vocab() != data_tokenizer.get_vocab():
                if not hasattr(datamodule, "use_teacher_tokenizer"):
                    raise ValueError(
                        f"The teacher tokenizes with its own vocabulary ({len(tokenizer)} "
                        f"tokens) but {type(datamodule).__name__} cannot add the teacher's "
                        "tokenization to batches. Fix: use TextClassificationDataModule, or "
                        "give batches `teacher_input_ids` and `teacher_attention_mask`."
                    )
                datamodule.use_teacher_tokenizer(tokenizer)
        super().setup(stage)
        if stage != "fit":
            return
        self._set_teacher_normalization(datamodule)
        train = datamodule.split_dataset("train") if hasattr(datamodule, "split_dataset") else None
        if self.cache_teacher and getattr(train, "epoch_indexed", False):
            raise ValueError(
                "`cache_teacher: true` scores each training record once, but the training data "
                "is augmented (`train_transforms` or token augmentation): later epochs would "
                "show the student views the teacher never scored. Fix: set `cache_teacher: "
                "false` (the teacher then scores each augmented view live, the same view the "
                "student sees), or turn training augmentation off."
            )
        if datamodule is not None and hasattr(datamodule, "example_batch"):
            self._probe(datamodule.example_batch("train"))
        elif self.feature_layers:
            raise ValueError(
                "Feature distillation sizes its adapters on one training batch, taken from the "
                "DataModule's `example_batch`. Fix: train with a lifecycle DataModule (or give "
                "yours an `example_batch(split)` method)."
            )
        if self.cache_teacher and train is not None:
            self.cached_logits = torch.zeros(len(train), self.num_classes)
            self.cached = torch.zeros(len(train), dtype=torch.bool)
        log.info(
            f"Distilling a teacher of {parameter_count(self.teacher):,} parameters into a "
            f"student of {parameter_count(self.backbone) + parameter_count(self.head):,}."
        )

    def _set_teacher_normalization(self, datamodule) -> None:
        """An image teacher trained with another normalization gets the student's images
        mapped to its own: ``x_t = (x * std_s + mean_s - mean_t) / std_t``."""
        theirs = getattr(self.teacher, "normalization", None)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if theirs is None or mean is None or std is None:
            return
        t_mean, t_std = (torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in theirs)
        s_mean, s_std = (
            torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std)
        )
        if torch.allclose(t_mean, s_mean) and torch.allclose(t_std, s_std):
            return
        self.teacher_scale = s_std / t_std
        self.teacher_shift = (s_mean - t_mean) / t_std

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
                self._capturing = True
                self.forward_batch(batch)
        finally:
            self._capturing = False
            self.train(was_training)
        classes = teacher_logits.shape[-1]
        if classes != self.num_classes:
            raise ValueError(
                f"The teacher outputs {classes} classes but the student has `num_classes: "
                f"{self.num_classes}`. Distillation needs the same classes in the same order. "
                f"Fix: use a teacher trained on these {self.num_classes} classes."
            )
        for s_name, t_name in self.feature_layers.items():
            s_shape = tuple(self._captured["student"][s_name].shape)
            t_shape = tuple(self._captured["teacher"][t_name].shape)
            key = self._adapter_key(s_name)
            if s_shape == t_shape or key in self.adapters:
                continue
            if not self.feature_adapter:
                raise ValueError(
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
        self._captured = {"student": {}, "teacher": {}}

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
        self._capturing = capture
        try:
            with torch.no_grad():
                logits = self.teacher(
                    *(inputs if inputs is not None else self._teacher_inputs(batch))
                )
        finally:
            self._capturing = False
        self.teacher_calls += len(logits)
        return logits.detach()

    def teacher_logits(self, batch: dict, inputs=None) -> torch.Tensor:
        """The teacher's logits for a training batch: from the cache where every record of the
        batch has been scored before (``cache_teacher``), else computed (and cached)."""
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
        terms = []
        for s_name, t_name in self.feature_layers.items():
            student = self._captured["student"][s_name]
            teacher = self._captured["teacher"][t_name].to(student.dtype)
            key = self._adapter_key(s_name)
            if key in self.adapters:
                student = self.adapters[key](student)
            if self.feature_loss == "mse":
                terms.append(F.mse_loss(student, teacher))
            else:
                terms.append(
                    1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1).mean()
                )
        self._captured = {"student": {}, "teacher": {}}
        return torch.stack(terms).sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target, weight = batch[self.target_key], batch.get("weight")
        inputs = self.inputs(batch)
        mixed = self.mix is not None and float(torch.rand(())) < self.mix_prob
        lam, perm, teacher_inputs = 1.0, None, None
        if mixed:
            if self.teacher_input_keys != self.input_keys:
                raise ValueError(
                    f"`mix: {self.mix}` mixes the student's {self.input_keys}, but the teacher "
                    f"takes {self.teacher_input_keys}: it could not see the same mixed input. "
                    "Fix: set `mix: null`."
                )
            mixed_x, lam, perm = self._mix_input(inputs[0])
            inputs = [mixed_x, *inputs[1:]]
            teacher_inputs = self._teacher_inputs({**batch, self.input_keys[0]: mixed_x})
        teacher = self.teacher_logits(batch, inputs=teacher_inputs)
        self._capturing = bool(self.feature_layers)
        try:
            logits = self(*inputs)
        finally:
            self._capturing = False
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
