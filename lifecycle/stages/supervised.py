"""``SupervisedModule``: what classification and regression share — backbone + head, optimizer
and schedule from config, an explicit L1 penalty, optional ``torch.compile``, and checkpoints
that reload on their own and refuse to build anything but networks."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lifecycle.compat import cli_given_hyperparameters
from lifecycle.data.loading import real_records
from lifecycle.errors import ConfigError
from lifecycle.interfaces import (
    EVALUATION_OUTPUTS,
    RUN_OUTPUTS,
    DataNeeds,
    SizedByBackbone,
    StageOutput,
    check_data_needs_met,
    optional,
    require,
)
from lifecycle.models.heads import feature_size
from lifecycle.training.clipping import ShardedClipping
from lifecycle.training.optim import (
    OptimizerFactory,
    SchedulerFactory,
    configure_stage_optimizers,
)
from lifecycle.training.sharding import data_parallel_mesh, shard_module


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer running ``module``, or ``None`` when it is not attached to one."""
    try:
        return module.trainer
    except RuntimeError:  # Lightning's "is not attached to a `Trainer`"
        return None


def trainer_datamodule(module: L.LightningModule):
    """The DataModule of the Trainer running ``module``, or ``None`` (no Trainer, or data
    given as plain DataLoaders)."""
    trainer = attached_trainer(module)
    return getattr(trainer, "datamodule", None) if trainer is not None else None


def size_head(head: nn.Module, backbone: nn.Module, field: str = "model.init_args.head") -> None:
    """Give a head left unsized (``in_features: null``, :class:`~lifecycle.interfaces.SizedByBackbone`)
    the backbone's ``out_features``, and refuse a head sized for other features.

    Raises:
        ConfigError: the head's ``in_features`` differs from the backbone's ``out_features``.
    """
    wanted = getattr(head, "in_features", None)
    if isinstance(head, SizedByBackbone) and wanted is None:
        head.size_to(feature_size(backbone))
        return
    have = optional(backbone, "out_features")
    if isinstance(wanted, int) and isinstance(have, int) and wanted != have:
        raise ConfigError(
            f"The head takes {wanted} features but the backbone {type(backbone).__name__} "
            f"gives {have}. Fix: set `{field}.init_args.in_features: {have}`, or leave it out "
            "(null) to have it filled in from the backbone."
        )


class SupervisedModule(ShardedClipping, L.LightningModule):
    """Base of the supervised stages: ``forward(x) = head(backbone(x))``.

    ``channels_last`` stores image tensors and conv weights as NHWC, which oneDNN's CPU
    convolutions (and GPU tensor cores) run faster; the results are the same.

    Under every Trainer strategy: ``configure_model`` shards the backbone and head block by
    block with FSDP2 when the strategy is ``ModelParallelStrategy`` (see
    :mod:`lifecycle.training.sharding`), and gradient clipping by norm or value is correct
    under DDP, FSDP1, FSDP2 and DeepSpeed (see :mod:`lifecycle.training.clipping`).

    Subclasses build the head, the loss and the metrics. See :class:`ClassificationModule`
    for the arguments.
    """

    target_key = "label"
    # what a run of the stage writes, by name (lifecycle.interfaces.output_paths)
    outputs: ClassVar[dict[str, StageOutput]] = {**RUN_OUTPUTS, **EVALUATION_OUTPUTS}

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        scheduler_interval: Literal["epoch", "step"] | None,
        monitor: str,
        l1_penalty: float,
        input_key: str | list[str] | None,
        compile: bool,
        channels_last: bool,
    ):
        super().__init__()
        if l1_penalty < 0:
            raise ConfigError(f"`l1_penalty` must be >= 0, got {l1_penalty}.")
        self.save_hyperparameters(ignore=self._module_arguments())
        from lifecycle.artifacts import standalone_hparams

        for key in ("backbone", "student"):  # DistillationModule's backbone is its `student`
            standalone_hparams(self.hparams, key, backbone)
        size_head(head, backbone)
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        if compile:
            # in place: the state_dict keeps its keys, so checkpoints load with or without it
            backbone.compile()
        self.backbone = backbone
        self.channels_last = channels_last
        self.head = head
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.monitor = monitor
        self.l1_penalty = l1_penalty
        keys = input_key if input_key is not None else optional(backbone, "input_keys", "image")
        self.input_keys = [keys] if isinstance(keys, str) else list(keys)

    def _module_arguments(self) -> list[str]:
        """Names of the ``__init__`` arguments (of this class and its subclasses) holding
        modules given from Python: they stay out of the hyperparameters (they are in the
        state_dict, or for a teacher nowhere). Built by LightningCLI, the hyperparameters are
        the config instead, where modules are their class_path/init_args: all are kept, so
        ``load_from_checkpoint`` rebuilds the module from the checkpoint alone."""
        if cli_given_hyperparameters() is not None:
            return []
        return module_parameters(type(self))

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ):
        """Lightning's ``load_from_checkpoint``, read with ``weights_only=True``, after
        :func:`lifecycle.artifacts.check_checkpoint` has refused (before anything is built) a
        checkpoint whose hyperparameters name another module than ``cls`` (or a subclass), or
        classes in it other than networks, optimizers and schedulers. Only an explicit
        ``weights_only=False`` (a file you wrote yourself) skips the checks.

        Raises:
            UnsafeLoadError: a class the checkpoint may not build.
        """
        from lifecycle.artifacts import (
            LOADERS,
            check_checkpoint,
            check_spec,
            checkpoint_classes,
            checkpoint_globals,
        )

        trusted = []
        if isinstance(checkpoint_path, str | Path) and weights_only is not False:
            check_checkpoint(checkpoint_path, cls)
            trusted = checkpoint_globals(checkpoint_path)
        if hparams_file is not None and str(hparams_file).endswith((".yaml", ".yml")):
            import yaml

            hparams = yaml.safe_load(Path(hparams_file).read_text()) or {}
            check_spec(hparams, str(hparams_file), checkpoint_classes(), LOADERS, "hparams")
        with torch.serialization.safe_globals(trusted):
            return super().load_from_checkpoint(
                checkpoint_path,
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=weights_only,
                **kwargs,
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written while the backbone was wrapped by ``torch.compile`` (before it
        was compiled in place) have its keys under ``backbone._orig_mod.``: they load too."""
        from lifecycle.artifacts import strip_compiled_prefix

        strip_compiled_prefix(checkpoint.get("state_dict", {}))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(*inputs))

    def inputs(self, batch: dict) -> list[torch.Tensor]:
        """The backbone's arguments from a dict batch (``batch[k]`` for each input key), with a
        clear error when one is absent."""
        missing = [k for k in self.input_keys if k not in batch]
        if missing:
            raise KeyError(
                f"Batch has no {missing} field (it has {sorted(batch)}). "
                f"Fix: set the module's `input_key` to the field(s) the backbone takes."
            )
        xs = [batch[k] for k in self.input_keys]
        if self.channels_last:
            xs = [x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in xs]
        return xs

    def forward_batch(self, batch: dict) -> torch.Tensor:
        """``forward`` on the inputs of a dict batch."""
        return self(*self.inputs(batch))

    @staticmethod
    def real_records(batch: dict, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tensors`` without the padding rows of a sharded evaluation batch
        (:func:`lifecycle.data.loading.real_records`): what losses, metrics and predictions are
        computed on. The forward pass still runs on every row, as every rank must run it."""
        return real_records(batch, *tensors)

    def log_eval_loss(
        self, name: str, mean: MeanMetric, loss: torch.Tensor, records: int, prog_bar: bool = False
    ) -> None:
        """Log ``name``, the epoch's mean of a batch-mean ``loss`` over the ``records`` it was
        computed on: ``mean`` (a ``MeanMetric`` attribute of the module, reset by Lightning)
        sums ``loss x records`` and ``records`` over all batches and ranks, so the value is the
        mean over every record once, as on one device, whatever the shards (Lightning's own
        ``sync_dist`` mean divides by an integer mean of the ranks' batch sizes, which is off
        by ``N / (N - 1)`` for ``N`` records over 2 ranks when ``N`` is odd)."""
        if records:
            mean.update(loss.detach().float(), weight=records)
        self.log(name, mean, prog_bar=prog_bar)

    def data_needs(self) -> DataNeeds:
        """What the data must be for this stage (:class:`~lifecycle.interfaces.DataNeeds`):
        for a backbone pretrained on normalized images (loaded with
        :func:`lifecycle.artifacts.load_backbone`, or ImageNet weights), that normalization.
        Known from the backbone alone; the DataModule reads it at the start of its ``setup``."""
        info = optional(self.backbone, "pretrained")
        if info is None or getattr(info, "mean", None) is None:
            return DataNeeds()
        return DataNeeds(
            mean=list(info.mean), std=list(info.std), normalization_source=str(info.folder)
        )

    # metrics the stages log where higher is better; every other one (losses, errors) is lower
    HIGHER_IS_BETTER = ("accuracy", "f1", "auroc", "precision", "recall", "r2", "top1", "top5")

    @property
    def monitor_mode(self) -> str:
        """``"max"`` when :attr:`monitor` is a metric where higher is better (``val/accuracy``,
        ``val/f1``, ``val/r2``, ...), else ``"min"``: how the CLI's default checkpoint picks
        the best epoch."""
        name = self.monitor.rsplit("/", 1)[-1].lower()
        return "max" if name.startswith(self.HIGHER_IS_BETTER) else "min"

    def check_data_needs(self, datamodule) -> None:
        """Refuse a DataModule that cannot meet :meth:`data_needs`
        (:func:`~lifecycle.interfaces.check_data_needs_met`)."""
        check_data_needs_met(datamodule, self.data_needs(), type(self).__name__)

    def setup(self, stage: str) -> None:
        """Check, never change, the DataModule: that it met :meth:`data_needs` and tokenizes
        as the backbone was pretrained, and that its tokenizer and rows fit the backbone."""
        self.check_data_needs(trainer_datamodule(self))
        self.check_pretrained_tokenizer()
        self.check_data_fits_backbone()

    def check_pretrained_tokenizer(self) -> None:
        """For a backbone pretrained on text with its own tokenizer: check that the data
        tokenizes with it (ids from another vocabulary would mean other words).

        Raises:
            ConfigError: the DataModule has no ``tokenizer``, or another one.
        """
        info = optional(self.backbone, "pretrained")
        datamodule = trainer_datamodule(self)
        if info is None or info.tokenizer is None or datamodule is None:
            return
        tokenizer = require(
            datamodule,
            "tokenizer",
            f"{type(self).__name__} (its backbone was pretrained with the tokenizer in "
            f"{info.tokenizer})",
            "give the DataModule a `tokenizer` attribute (lifecycle.interfaces.TokenizedData), "
            f"e.g. lifecycle.data.TextClassificationDataModule with `tokenizer: {info.tokenizer}`",
        )
        if tokenizer is not None:
            from lifecycle.data.tokenization import load_tokenizer

            if load_tokenizer(info.tokenizer).get_vocab() != tokenizer.get_vocab():
                raise ConfigError(
                    f"The backbone from {info.folder} was pretrained with the tokenizer saved "
                    f"there, but the data tokenizes with another ({len(tokenizer)} tokens): the "
                    f"same ids would mean other words. Fix: set `data.init_args.tokenizer: "
                    f"{info.tokenizer}`."
                )

    def sharded_modules(self) -> list[nn.Module]:
        """What ``configure_model`` shards: the backbone and the head (a subclass adds its own
        trainable modules)."""
        return [self.backbone, self.head]

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``, shard :meth:`sharded_modules` with FSDP2 over the
        data-parallel mesh (each block its own unit); a no-op under other strategies."""
        mesh = data_parallel_mesh(self)
        if mesh is None:
            return
        if self.channels_last:
            # FSDP2 shards contiguous parameters only; NHWC inputs still reach the convolutions
            self.backbone.to(memory_format=torch.contiguous_format)
        shard_module(self.sharded_modules(), mesh, owner=self)

    def check_data_fits_backbone(self) -> None:
        """Raise when the DataModule's tokenizer or text length exceeds what the backbone takes."""
        from lifecycle.data.tokenization import embedding_rows_needed

        tokenizer = self.datamodule_attr("tokenizer")
        vocab = optional(self.backbone, "vocab_size")
        needed = embedding_rows_needed(tokenizer) if tokenizer is not None else 0
        if isinstance(vocab, int) and needed > vocab:
            if "vocab_size" in inspect.signature(type(self.backbone)).parameters:
                fix = (
                    f"set `model.init_args.backbone.init_args.vocab_size: {needed}` (or lower the "
                    "data's `vocab_size`)"
                )
            else:  # a pretrained backbone: its own tokenizer is the one that fits
                fix = "set `data.init_args.tokenizer` to the backbone's folder or model name"
            raise ConfigError(
                f"The tokenizer has {needed} tokens but the backbone's embedding holds {vocab}. "
                f"Fix: {fix}."
            )
        positions = optional(self.backbone, "max_length")
        length = self.datamodule_attr("max_length")
        if isinstance(positions, int) and isinstance(length, int) and length > positions:
            raise ConfigError(
                f"The data's texts reach {length} tokens but the backbone has {positions} "
                f"positions. Fix: set the backbone's `max_length` to at least {length}, or "
                f"`data.init_args.max_length: {positions}`."
            )

    def l1_term(self) -> torch.Tensor:
        """``l1_penalty * sum(|w|)`` over weight matrices and kernels (biases and norms excluded)."""
        weights = [p.abs().sum() for p in self.parameters() if p.requires_grad and p.ndim > 1]
        return self.l1_penalty * torch.stack(weights).sum()

    def regularized(self, loss: torch.Tensor) -> torch.Tensor:
        if self.l1_penalty > 0:
            l1 = self.l1_term()
            self.log("train/l1", l1, on_step=False, on_epoch=True)
            return loss + l1
        return loss

    def configure_optimizers(self):
        return configure_stage_optimizers(self, self.monitor)

    def datamodule_attr(self, name: str, default: Any = None):
        """An optional attribute of the Trainer's DataModule (one a protocol of
        :mod:`lifecycle.interfaces` lists as optional, e.g. ``class_names``), or ``default``."""
        return optional(trainer_datamodule(self), name, default)

    def datamodule_require(self, name: str, fix: str) -> Any:
        """A required attribute of the Trainer's DataModule (``None`` without a DataModule:
        plain DataLoaders), or a ConfigError naming it and ``fix``."""
        datamodule = trainer_datamodule(self)
        return None if datamodule is None else require(datamodule, name, type(self).__name__, fix)


def module_parameters(cls: type) -> list[str]:
    """The ``__init__`` parameters of ``cls`` and its bases whose annotation admits an
    ``nn.Module`` (``nn.Module``, ``nn.Module | None``, ...): the ones that take modules."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith(("lightning", "torch")):
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: read it as text
            hints = {k: str(v) for k, v in getattr(init, "__annotations__", {}).items()}
        for name, hint in hints.items():
            if name != "return" and _admits_module(hint):
                names.add(name)
    return sorted(names)


def _admits_module(hint: Any) -> bool:
    if isinstance(hint, str):
        return "Module" in hint
    if isinstance(hint, type):
        return issubclass(hint, nn.Module)
    return any(_admits_module(arg) for arg in typing.get_args(hint))
