"""Fine-tuning strategies: callbacks on Lightning's ``BaseFinetuning`` that decide which parts of
a pretrained backbone train, when, and at what learning rate.

Add one to ``trainer.callbacks`` (any stage with a ``backbone`` and a head: classification,
regression)::

    trainer:
      callbacks:
        - class_path: lifecycle.training.finetuning.GradualUnfreezing
          init_args: {lr_decay: 0.38}

========================  ================================================================
no callback               full fine-tuning: every weight trains at the optimizer's rate
:class:`LinearProbe`      the backbone fixed (weights, BatchNorm statistics, dropout off);
                          only the head trains
:class:`FreezeUnfreeze`   the head alone until epoch N, then the whole backbone at
                          ``backbone_lr_scale`` x the head's rate
:class:`GradualUnfreezing` ULMFiT (Howard & Ruder 2018): one layer group more per epoch,
                          from the top, each group below at ``lr_decay`` x the rate above
:class:`DiscriminativeLR` everything trains from the start, layer group ``k`` from the top at
                          ``lr_decay ** (k + 1)`` x the head's rate
========================  ================================================================

Layer groups come from the backbone's ``layer_groups()`` (bottom to top: the toolkit's
Transformer and EfficientNet backbones have one), else from its top-level children.

**Learning-rate schedules stay right.** A group added mid-run starts at ``scale`` x the head's
current rate, and every scheduler on the optimizer learns about it (its ``base_lrs``,
``LambdaLR``'s ``lr_lambdas``, ``OneCycleLR``'s per-group ``max_lr``/``min_lr``,
``ReduceLROnPlateau``'s ``min_lrs``, ...), so the new group follows the same schedule at its
scale. Lightning Flash broke here (a ``LambdaLR`` raises on a group it was not built with).

**Distributed.** Under DDP, parameters frozen when DDP wrapped the model are outside its
gradient all-reduce; once unfrozen, their gradients are averaged over the processes by this
callback after each backward, so the replicas stay identical. FSDP2 (``ModelParallelStrategy``)
syncs whatever requires a gradient at each backward. DeepSpeed is refused (Lightning's
``BaseFinetuning`` does not support it).

**Resuming.** The added parameter groups are in the callback's checkpoint state (Lightning's
``BaseFinetuning``); parameters that were unfrozen before the checkpoint are made trainable again
when training resumes.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer


def layer_groups(backbone: nn.Module) -> list[nn.Module]:
    """``backbone`` cut into groups of layers, bottom (input side) to top: its own
    ``layer_groups()`` when it has one, else its top-level children that hold parameters (the
    children of a single ``Sequential``/``ModuleList`` child)."""
    own = getattr(backbone, "layer_groups", None)
    if callable(own):
        groups = list(own())
    else:
        groups = [c for c in backbone.children() if any(True for _ in c.parameters())]
        if len(groups) == 1 and isinstance(groups[0], nn.Sequential | nn.ModuleList):
            groups = [c for c in groups[0].children() if any(True for _ in c.parameters())]
    if not groups:
        raise ValueError(f"{type(backbone).__name__} has no layers with parameters to fine-tune.")
    return groups


def _params(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Parameter]:
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    seen, out = set(), []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def add_param_group(
    trainer: L.Trainer | None, optimizer: Optimizer, params: list[nn.Parameter], scale: float
) -> None:
    """Add ``params`` to ``optimizer`` as a new group at ``scale`` x the first group's learning
    rate, and extend every scheduler of that optimizer so the group follows the schedule."""
    reference = optimizer.param_groups[0]
    group: dict = {"params": params, "lr": reference["lr"] * scale}
    optimizer.add_param_group(group)
    group = optimizer.param_groups[-1]
    for key, value in reference.items():
        if key in group or key == "params":
            continue
        # schedule bookkeeping kept in the groups: initial_lr, max_lr, min_lr, *_momentum, ...
        group[key] = value * scale if "lr" in key and isinstance(value, float | int) else value
    configs = trainer.lr_scheduler_configs if trainer is not None else []
    for config in configs:
        if getattr(config.scheduler, "optimizer", None) is optimizer:
            _extend_scheduler(config.scheduler, scale)


def _extend_scheduler(scheduler, scale: float) -> None:
    """Give a scheduler built before a group was added that group's entries (scaled from the
    first group's), recursing into ``SequentialLR``/``ChainedScheduler``."""
    for inner in getattr(scheduler, "_schedulers", None) or []:
        _extend_scheduler(inner, scale)
    groups = len(scheduler.optimizer.param_groups)
    for name in ("base_lrs", "min_lrs", "_last_lr"):
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and values and len(values) < groups:
            values.append(values[0] * scale)
    for name in ("lr_lambdas", "max_momentums", "base_momentums"):
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and values and len(values) < groups:
            values.append(values[0])


class Finetuning(BaseFinetuning):
    """Base of the fine-tuning strategies: finds the module's backbone and its layer groups,
    adds parameter groups safely for schedulers, and keeps late-unfrozen parameters in sync under
    DDP. Subclasses define ``freeze_before_training`` and ``finetune_function``.

    Args:
        train_bn: train the BatchNorm layers of frozen parts (their affine weights and running
            statistics); ``False`` freezes them with the rest.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, train_bn: bool = True, backbone_attr: str = "backbone"):
        super().__init__()
        self.train_bn = train_bn
        self.backbone_attr = backbone_attr
        self._outside_ddp: list[nn.Parameter] = []

    def backbone(self, pl_module: L.LightningModule) -> nn.Module:
        module = getattr(pl_module, self.backbone_attr, None)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"{type(self).__name__} fine-tunes `{self.backbone_attr}`, which "
                f"{type(pl_module).__name__} does not have. Fix: set the callback's "
                "`backbone_attr` to the attribute holding the pretrained network."
            )
        return module

    def groups(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """The backbone's layer groups, bottom to top."""
        return layer_groups(self.backbone(pl_module))

    def unfreeze(
        self,
        pl_module: L.LightningModule,
        optimizer: Optimizer,
        modules: nn.Module | Iterable[nn.Module],
        scale: float,
        label: str,
    ) -> None:
        """Make ``modules`` trainable and give their parameters to ``optimizer`` as a new group
        at ``scale`` x the head's current learning rate."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.make_trainable(modules)
        params = [p for p in _params(modules) if p.requires_grad and id(p) not in present]
        if not params:
            return
        add_param_group(pl_module._trainer, optimizer, params, scale)
        rank_zero_info(
            f"{type(self).__name__}: epoch {pl_module.current_epoch}, {label} trains "
            f"({sum(p.numel() for p in params):,} weights) at {scale:.3g} x the head's "
            f"learning rate ({optimizer.param_groups[-1]['lr']:.3g} now)."
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        others = [c for c in trainer.callbacks if isinstance(c, BaseFinetuning) and c is not self]
        if others:
            raise ValueError(
                f"Two fine-tuning callbacks ({type(self).__name__} and "
                f"{', '.join(type(c).__name__ for c in others)}) would both freeze and unfreeze "
                "the backbone. Fix: keep one in `trainer.callbacks`."
            )
        super().setup(trainer, pl_module, stage)
        self._outside_ddp = [p for p in pl_module.parameters() if not p.requires_grad]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after a resume, parameters unfrozen before the checkpoint are in the restored groups
        # (the groups after the first: the ones fine-tuning added) but frozen by setup
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups[1:]:
                for p in group["params"]:
                    p.requires_grad_(True)
        super().on_train_epoch_start(trainer, pl_module)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.strategies import DDPStrategy

        if not isinstance(trainer.strategy, DDPStrategy) or trainer.world_size < 2:
            return
        grads = [p.grad for p in self._outside_ddp if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= trainer.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


class LinearProbe(Finetuning):
    """Train the head on a fixed backbone: its weights frozen, and the backbone kept in eval mode
    in training too, so BatchNorm normalizes with its pretrained statistics (and does not update
    them) and dropout is off: the head sees the very features the backbone computes at test
    time. The cheapest measure of how good pretrained features are.

    Args:
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, backbone_attr: str = "backbone"):
        super().__init__(train_bn=False, backbone_attr=backbone_attr)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=False)

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        pass

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a linear probe never unfreezes: skip the resume rule that re-enables optimizer params
        BaseFinetuning.on_train_epoch_start(self, trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        backbone = self.backbone(pl_module)
        if backbone.training:  # Lightning puts the whole model in train mode each epoch
            backbone.eval()


class FreezeUnfreeze(Finetuning):
    """Train the head alone on the frozen backbone until epoch ``unfreeze_at_epoch``, then the
    whole backbone as well, at ``backbone_lr_scale`` x the head's learning rate. The head learns
    first, so its random start does not send large gradients into the pretrained weights.

    Args:
        unfreeze_at_epoch: the epoch (0-based) from which the backbone trains.
        backbone_lr_scale: the backbone's learning rate as a multiple of the head's.
        train_bn: train BatchNorm layers while the rest of the backbone is frozen.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(
        self,
        unfreeze_at_epoch: int = 1,
        backbone_lr_scale: float = 0.1,
        train_bn: bool = True,
        backbone_attr: str = "backbone",
    ):
        if unfreeze_at_epoch < 0 or backbone_lr_scale <= 0:
            raise ValueError(
                f"`unfreeze_at_epoch` must be >= 0 and `backbone_lr_scale` > 0, got "
                f"{unfreeze_at_epoch} and {backbone_lr_scale}."
            )
        super().__init__(train_bn=train_bn, backbone_attr=backbone_attr)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_scale = backbone_lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=self.train_bn)

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        if epoch >= self.unfreeze_at_epoch:
            self.unfreeze(
                pl_module, optimizer, self.backbone(pl_module), self.backbone_lr_scale, "backbone"
            )


class GradualUnfreezing(Finetuning):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): the head alone first, then one layer
    group more every ``every`` epochs, from the top of the backbone down; the group ``k`` places
    below the top trains at ``lr_decay ** (k + 1)`` x the head's learning rate (ULMFiT: 1/2.6 =
    0.38; 1.0 gives every group the head's rate). Later layers, whose features are the most
    task-specific, adapt first; the general lower layers last and gentlest.

    Args:
        start_epoch: the epoch (0-based) at which the top group starts training.
        every: epochs between two unfreezings.
        lr_decay: learning-rate factor from one group to the one below.
        train_bn: train BatchNorm layers of still-frozen groups.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(
        self,
        start_epoch: int = 1,
        every: int = 1,
        lr_decay: float = 1.0,
        train_bn: bool = True,
        backbone_attr: str = "backbone",
    ):
        if start_epoch < 0 or every < 1 or not 0 < lr_decay <= 1:
            raise ValueError(
                f"`start_epoch` must be >= 0, `every` >= 1 and `lr_decay` in (0, 1], got "
                f"{start_epoch}, {every} and {lr_decay}."
            )
        super().__init__(train_bn=train_bn, backbone_attr=backbone_attr)
        self.start_epoch, self.every, self.lr_decay = start_epoch, every, lr_decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=self.train_bn)

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.start_epoch:
            return
        top_down = self.groups(pl_module)[::-1]
        due = min(len(top_down), (epoch - self.start_epoch) // self.every + 1)
        for k in range(due):
            label = f"layer group {len(top_down) - k}/{len(top_down)}"
            self.unfreeze(pl_module, optimizer, top_down[k], self.lr_decay ** (k + 1), label)


class DiscriminativeLR(Finetuning):
    """Layer-wise (discriminative) learning rates, nothing frozen: the head at the optimizer's
    rate and backbone layer group ``k`` places below the top at ``lr_decay ** (k + 1)`` x it
    (ULMFiT used 1/2.6 = 0.38; for BERT-style encoders 0.6-0.95 per layer is common). The
    backbone's parameters move out of the optimizer's first group into one group per layer
    group before the first step, so every parameter trains from the start (and under DDP each
    stays in DDP's own gradient sync).

    Args:
        lr_decay: learning-rate factor from one layer group to the one below.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, lr_decay: float = 0.5, backbone_attr: str = "backbone"):
        if not 0 < lr_decay <= 1:
            raise ValueError(f"`lr_decay` must be in (0, 1], got {lr_decay}.")
        super().__init__(train_bn=True, backbone_attr=backbone_attr)
        self.lr_decay = lr_decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        pass

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        first = optimizer.param_groups[0]
        backbone = {id(p) for p in self.backbone(pl_module).parameters()}
        if not any(id(p) in backbone for p in first["params"]):
            return  # already split (an earlier epoch, or a resumed run's restored groups)
        if optimizer.state:
            raise ValueError(
                "DiscriminativeLR splits the optimizer's parameter groups before the first step, "
                "but this optimizer has already stepped. Fix: add the callback from the start "
                "of training."
            )
        first["params"] = [p for p in first["params"] if id(p) not in backbone]
        top_down = self.groups(pl_module)[::-1]
        for k, group in enumerate(top_down):
            params = [p for p in _params(group) if p.requires_grad]
            if params:
                add_param_group(pl_module._trainer, optimizer, params, self.lr_decay ** (k + 1))
        rank_zero_info(
            f"DiscriminativeLR: {len(top_down)} backbone layer groups at "
            + ", ".join(f"{g['lr']:.3g}" for g in optimizer.param_groups[1:])
            + f" (top first); head at {first['lr']:.3g}."
        )
